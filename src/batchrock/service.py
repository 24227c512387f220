"""The job service: the rules of the control plane, in domain terms.

The API calls these methods with typed arguments (never wire dicts), and they raise
:mod:`batchrock.errors` exceptions the API renders. Validation of shapes (lengths, patterns,
enums) happens at the edge against the botocore model; rules that need the store (idempotency,
ownership, which statuses can be stopped) live here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from batchrock import jobs
from batchrock.catalogue import (
    UNSUPPORTED_MODEL_MESSAGE,
    AnyModel,
    ModelCatalogue,
    unsupported_invocation_message,
)
from batchrock.clock import Clock
from batchrock.errors import (
    ResourceNotFoundException,
    ServiceQuotaExceededException,
    TooManyTagsException,
    ValidationException,
)
from batchrock.jobs import Job, JobStatus
from batchrock.store.base import (
    JobFilter,
    JobRow,
    JobStore,
    PageKeys,
    PageRequest,
    RowKey,
    UnfinishedJobsQuota,
)

#: Tags one job may hold (the TooManyTagsException doc: "50 tags per resource").
MAX_TAGS_PER_RESOURCE = 50


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: jobs are per account and per region, as on AWS."""

    account_id: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    """What CreateModelInvocationJob asks for, already validated for shape."""

    name: str
    model_id: str
    role_arn: str
    input_s3_uri: str
    output_s3_uri: str
    client_request_token: str | None = None
    input_format: str | None = None
    input_bucket_owner: str | None = None
    output_kms_key_id: str | None = None
    output_bucket_owner: str | None = None
    vpc_subnet_ids: tuple[str, ...] | None = None
    vpc_security_group_ids: tuple[str, ...] | None = None
    timeout_hours: int | None = None
    invocation_type: str | None = None
    tags: Sequence[tuple[str, str]] = ()
    #: Why the input was refused before the job was made (the OpenAI Batch API validates
    #: its input file at submission): the job is made and failed at once with this message,
    #: and no model is asked for.
    refused: str | None = None
    #: The new job's id, when the caller chose it (the OpenAI edge writes the batch's record
    #: under it before the job exists); a fresh one otherwise.
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class JobPage:
    #: Read-only views of the jobs (the API presents them; nothing decides on them).
    jobs: list[JobRow]
    #: Whether more jobs follow the last one in this order.
    more: bool


class JobService:
    """Create, read, list, stop and tag jobs on behalf of a :class:`Caller`."""

    def __init__(
        self,
        store: JobStore,
        clock: Clock,
        *,
        max_unfinished_per_model: int = 0,
        catalogue: ModelCatalogue | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        #: Which model ids take batch jobs where (admin builds it from the shipped catalogue,
        #: the routes and the setting allow_any_model); unset: any id, as in unit tests.
        self.catalogue: ModelCatalogue = catalogue or AnyModel()
        #: Bedrock's quota "Sum of in-progress and submitted batch inference jobs using a base
        #: model for <model>", per account and region; 0: no limit.
        self.max_unfinished_per_model = max_unfinished_per_model
        #: Called after a job was created or asked to stop: an engine in the same process
        #: sets it, to act at once instead of at its next poll.
        self.on_change: Callable[[], None] | None = None

    def changed(self) -> None:
        """A job was created or stopped: tell whoever waits for that (the engine), if any."""
        if self.on_change is not None:
            self.on_change()

    async def create(self, caller: Caller, new: NewJob) -> tuple[Job, bool]:
        """Store a new job in Submitted; a repeated clientRequestToken returns the original
        job and creates nothing (the ``bool`` says whether a job was created)."""
        # First of all, as on Bedrock: a model it does not offer for batch inference (a typo,
        # the wrong Region) is refused before anything else is looked at and nothing is stored
        # (service-facts §3).
        if new.refused is None and not self.catalogue.supports(
            new.model_id, caller.region, caller.account_id
        ):
            raise ValidationException(UNSUPPORTED_MODEL_MESSAGE)
        invocation_type = new.invocation_type or "InvokeModel"
        # An OpenAI batch's bodies are OpenAI requests, whatever Bedrock's invocation types
        # for the model: only Bedrock's own types (InvokeModel, Converse) are the catalogue's.
        bedrock_type = not invocation_type.startswith(jobs.OPENAI_BATCH_PREFIX)
        if bedrock_type and not self.catalogue.takes(new.model_id, invocation_type):
            # Refused at Create like the model itself [UNCONFIRMED: Bedrock may fail the job
            # at validation instead]; docs/models.md, "Invocation types".
            raise ValidationException(unsupported_invocation_message(invocation_type))
        # Keep what the wire shows (milliseconds), so time filters agree with listed times.
        now = self.clock.now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        timeout = new.timeout_hours if new.timeout_hours is not None else jobs.DEFAULT_TIMEOUT_HOURS
        tags = dict(new.tags)
        if len(tags) > MAX_TAGS_PER_RESOURCE:
            raise TooManyTagsException(
                f"The number of tags ({len(tags)}) exceeds the limit of "
                f"{MAX_TAGS_PER_RESOURCE} tags per resource."
            )
        job = Job(
            job_id=new.job_id or jobs.new_job_id(),
            account_id=caller.account_id,
            region=caller.region,
            name=new.name,
            model_id=new.model_id,
            role_arn=new.role_arn,
            client_request_token=new.client_request_token,
            status=JobStatus.SUBMITTED,
            submit_time=now,
            last_modified_time=now,
            input_s3_uri=new.input_s3_uri,
            # Bedrock reports the defaults it applied (Terraform marks these as computed).
            input_format=new.input_format or "JSONL",
            input_bucket_owner=new.input_bucket_owner,
            output_s3_uri=new.output_s3_uri,
            output_kms_key_id=new.output_kms_key_id,
            output_bucket_owner=new.output_bucket_owner,
            vpc_subnet_ids=new.vpc_subnet_ids,
            vpc_security_group_ids=new.vpc_security_group_ids,
            timeout_hours=timeout,
            expiration_time=jobs.expiration_for(now, timeout),
            invocation_type=invocation_type,
        )
        limit = self.max_unfinished_per_model or None
        try:
            stored, created = await self.store.create(job, tags, max_unfinished=limit)
        except UnfinishedJobsQuota as exc:
            raise ServiceQuotaExceededException(
                f"You have reached the quota 'Sum of in-progress and submitted batch inference "
                f"jobs using a base model for {new.model_id}' ({exc.limit}) in "
                f"{caller.region}. Resubmit your request when a job has finished."
            ) from None
        if created and new.refused is not None:
            return await self._refuse(stored, new.refused[:2048]), created
        if created:
            self.changed()
        return stored, created

    async def _refuse(self, job: Job, message: str) -> Job:
        """Fail a job just made (a job is always created Submitted). An engine may have
        taken it meanwhile; its Validating fails too (the job has no input), so whichever
        move wins, the job ends Failed."""
        while not job.is_terminal:
            try:
                return await self.store.transition(
                    job.job_id,
                    JobStatus.FAILED,
                    now=self.clock.now(),
                    expected={job.status},
                    message=message,
                )
            except jobs.InvalidTransition:
                fresh = await self.store.get_by_id(job.job_id)
                if fresh is None:
                    break
                job = fresh
        return job

    async def get(self, caller: Caller, job_id: str) -> Job:
        job = await self.store.get(caller.account_id, caller.region, job_id)
        if job is None:
            raise ResourceNotFoundException(f"Could not find model invocation job {job_id}.")
        return job

    async def events(self, caller: Caller, job_id: str) -> list[jobs.JobEvent]:
        """The job's status history, oldest first (its owner only, as :meth:`get`)."""
        await self.get(caller, job_id)
        return await self.store.events(job_id)

    async def get_row_key(self, caller: Caller, job_id: str) -> RowKey:
        """The key (store/base.py ``RowKey``) of the caller's job ``job_id``, the read-only
        view GetModelInvocationJob presents."""
        key = await self.store.get_row_key(caller.account_id, caller.region, job_id)
        if key is None:
            raise ResourceNotFoundException(f"Could not find model invocation job {job_id}.")
        return key

    async def get_keyed(self, caller: Caller, job_id: str) -> tuple[RowKey, JobRow]:
        """The caller's job ``job_id`` as its read-only view, with the row's key."""
        keyed = await self.store.get_keyed_row(caller.account_id, caller.region, job_id)
        if keyed is None:
            raise ResourceNotFoundException(f"Could not find model invocation job {job_id}.")
        return keyed

    async def get_keyed_many(
        self, filter: JobFilter, job_ids: Collection[str]
    ) -> list[tuple[RowKey, JobRow]]:
        """The read-only views of those of ``job_ids`` that are ``filter``'s account's and
        region's jobs, each with its row's key, in no particular order (a listing's rows
        whose bytes are not kept)."""
        return await self.store.get_keyed_rows(filter.account_id, filter.region, job_ids)

    async def list_keys(self, filter: JobFilter, page: PageRequest) -> PageKeys:
        """The keys of the rows :meth:`list` would give and of the one after them, if any
        (which says whether more follow), as one string (store/base.py ``PageKeys``)."""
        return await self.store.list_row_keys(filter, _one_more(page))

    async def list_keyed(
        self, filter: JobFilter, page: PageRequest
    ) -> tuple[list[tuple[RowKey, JobRow]], bool]:
        """The rows :meth:`list` would give with their keys, and whether more follow."""
        keyed = await self.store.list_keyed_rows(filter, _one_more(page))
        return keyed[: page.limit], len(keyed) > page.limit

    async def list(self, filter: JobFilter, page: PageRequest) -> JobPage:
        rows = await self.store.list_rows(filter, _one_more(page))
        return JobPage(jobs=rows[: page.limit], more=len(rows) > page.limit)

    async def stop(self, caller: Caller, job_id: str) -> Job:
        """Ask a job to stop: an unfinished job moves to Stopping and the engine finishes it
        to Stopped. Stopping a job that is already Stopping is a no-op."""
        job = await self.get(caller, job_id)
        while True:
            if job.status is JobStatus.STOPPING:
                return job
            if job.status not in jobs.STOPPABLE:
                raise ValidationException(
                    f"Cannot stop a job that has already finished. State was: {job.status.value}"
                )
            try:
                stopping = await self.store.transition(
                    job.job_id, JobStatus.STOPPING, now=self.clock.now(), expected={job.status}
                )
            except jobs.InvalidTransition:
                # The engine moved the job meanwhile: look again and decide on the new status.
                job = await self.get(caller, job_id)
                continue
            self.changed()
            return stopping

    async def list_tags(self, caller: Caller, job_id: str) -> dict[str, str]:
        await self.get(caller, job_id)
        return await self.store.get_tags(job_id)

    async def tag(
        self, caller: Caller, job_id: str, tags: Sequence[tuple[str, str]], resource: str
    ) -> None:
        await self.get(caller, job_id)
        try:
            await self.store.put_tags(job_id, dict(tags), max_tags=MAX_TAGS_PER_RESOURCE)
        except OverflowError as exc:
            raise TooManyTagsException(
                f"Adding these tags would give the resource {exc.args[0]} tags, more than the "
                f"limit of {MAX_TAGS_PER_RESOURCE} tags per resource.",
                resource_name=resource,
            ) from exc

    async def untag(self, caller: Caller, job_id: str, keys: Sequence[str]) -> None:
        await self.get(caller, job_id)
        await self.store.remove_tags(job_id, keys)


def _one_more(page: PageRequest) -> PageRequest:
    """``page`` asking for one more row: it tells whether another page follows, without a
    count query."""
    return PageRequest(limit=page.limit + 1, descending=page.descending, after=page.after)
