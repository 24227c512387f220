"""Which models Bedrock offers for batch inference, and where: the model catalogue.

The facts are data (``models.toml`` next to this module, with its sources and date); this module
reads them and answers the one question CreateModelInvocationJob asks: may this account, in this
Region, start a batch job with this ``modelId``? Bedrock refuses anything else at Create, before
it looks at S3, with ``ValidationException: Batch inference is not supported for the requested
model`` (service-facts §3).

The service sees only the :class:`ModelCatalogue` protocol; ``admin`` builds the real one from
the data, the routes file (a routed id is always accepted: the user said who answers it) and the
setting ``allow_any_model`` (:class:`AnyModel`).

Id forms (service-facts §8):

- a foundation-model id, ``anthropic.claude-3-haiku-20240307-v1:0``: batch-capable in the
  Regions the catalogue lists for it (``regions = []``: only through an inference profile);
- a cross-Region inference profile id, ``us.`` / ``eu.`` / ``apac.`` / ``global.`` ... + a model
  id: the model must have a profile for that geography, called from a Region of it;
- the ARN of a foundation model or of an inference profile: as the id inside it, in the ARN's
  Region (which must be the caller's);
- an application inference profile ARN, or a custom or imported model ARN, of the caller's
  account and Region: accepted, since batchrock keeps no such resources and cannot see which
  model they wrap **[UNCONFIRMED]**; a provisioned-model ARN is refused (batch does not run on
  provisioned throughput).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, Protocol

#: Bedrock's words when it does not offer a model for batch inference (service-facts §3).
UNSUPPORTED_MODEL_MESSAGE = "Batch inference is not supported for the requested model"


def unsupported_invocation_message(invocation_type: str) -> str:
    """The refusal of a ``modelInvocationType`` the model does not take in batch. No capture
    of Bedrock's words was found **[UNCONFIRMED]**: Bedrock's refusal of the model, with the
    type named (clients matching the refusal's start still match)."""
    return f"{UNSUPPORTED_MODEL_MESSAGE} with modelInvocationType {invocation_type}."


#: Geography prefix of a cross-Region inference profile -> whether a source Region belongs to it.
GEOGRAPHIES: dict[str, Callable[[str], bool]] = {
    "us": lambda r: r.startswith("us-") and not r.startswith("us-gov-"),
    "us-gov": lambda r: r.startswith("us-gov-"),
    "eu": lambda r: r.startswith("eu-"),
    "apac": lambda r: r.startswith("ap-"),
    "jp": lambda r: r in {"ap-northeast-1", "ap-northeast-3"},
    "au": lambda r: r in {"ap-southeast-2", "ap-southeast-4"},
    "ca": lambda r: r.startswith("ca-"),
    "global": lambda r: not r.startswith(("us-gov-", "cn-", "us-iso")),
}

INVOCATION_TYPES = frozenset({"InvokeModel", "Converse"})
MODALITIES = frozenset({"text", "image", "video", "document", "audio"})


#: What a modelId names.
RefKind = Literal["foundation", "profile", "application-profile", "custom", "provisioned"]


class CatalogueError(ValueError):
    """The catalogue data is malformed (a packaging defect; tests load it)."""


@dataclass(frozen=True, slots=True)
class Quotas:
    """Bedrock's per-model batch quotas (defaults and per-model values from the data)."""

    records_per_job: int
    records_per_input_file: int
    min_records_per_job: int
    input_file_size_gb: int
    job_size_gb: int
    unfinished_jobs: int


@dataclass(frozen=True, slots=True)
class CatalogueModel:
    """One foundation model Bedrock offers for batch inference."""

    id: str
    name: str
    family: str
    invocation_types: tuple[str, ...]
    input_modalities: tuple[str, ...]
    #: Regions where the bare id is batch-capable; ``None``: not known (any is accepted).
    regions: tuple[str, ...] | None
    profiles: tuple[str, ...]
    #: Source Regions its profiles may be called from; ``None``: any of the geography.
    profile_regions: tuple[str, ...] | None
    quotas: Quotas
    unconfirmed: tuple[str, ...] = ()

    def offered_in(self, region: str) -> bool:
        """Whether the bare (single-Region) id takes batch jobs in ``region``."""
        return self.regions is None or region in self.regions

    def profile_offered(self, geography: str, region: str) -> bool:
        """Whether the ``geography.`` profile of this model can be called from ``region``."""
        if geography not in self.profiles or not GEOGRAPHIES[geography](region):
            return False
        return self.profile_regions is None or region in self.profile_regions


@dataclass(frozen=True, slots=True)
class ModelRef:
    """What a ``modelId`` names, taken apart (no look-up yet)."""

    kind: RefKind
    #: The foundation-model id (for ``foundation`` and ``profile``), else the resource id.
    base_id: str
    geography: str | None = None
    #: Region and account of an ARN (``None`` for plain ids).
    arn_region: str | None = None
    arn_account: str | None = None


_ARN_KINDS: dict[str, RefKind] = {
    "foundation-model": "foundation",
    "inference-profile": "profile",
    "application-inference-profile": "application-profile",
    "custom-model": "custom",
    "imported-model": "custom",
    "custom-model-deployment": "custom",
    "provisioned-model": "provisioned",
}


def parse_model_id(model_id: str) -> ModelRef | None:
    """Take a ``modelId`` apart; ``None`` when it is no form Bedrock knows."""
    arn_region = arn_account = None
    kind: RefKind
    kind = "foundation"
    model = model_id
    if model_id.startswith("arn:"):
        parts = model_id.split(":", 5)
        if len(parts) != 6 or parts[2] != "bedrock" or "/" not in parts[5]:
            return None
        arn_region, arn_account = parts[3], parts[4] or None
        resource, _, model = parts[5].partition("/")
        found = _ARN_KINDS.get(resource)
        if found is None or not model:
            return None
        if found not in {"foundation", "profile"}:
            return ModelRef(found, model, arn_region=arn_region, arn_account=arn_account)
        kind = found
    head, dot, rest = model.partition(".")
    if dot and head in GEOGRAPHIES and "." in rest:
        return ModelRef("profile", rest, head, arn_region, arn_account)
    if kind == "profile":  # an inference-profile ARN must name a profile id
        return None
    return ModelRef("foundation", model, None, arn_region, arn_account)


def reported_model_id(model_id: str, region: str, account_id: str) -> str:
    """The ``modelId`` GetModelInvocationJob reports: a cross-Region inference profile id comes
    back as the profile's full ARN in the job's Region and account; every other form
    unchanged (service-facts §8, from the Terraform provider, which strips it back)."""
    if model_id.startswith("arn:"):
        return model_id
    ref = parse_model_id(model_id)
    if ref is None or ref.kind != "profile":
        return model_id
    partition = "aws-us-gov" if region.startswith("us-gov-") else "aws"
    return f"arn:{partition}:bedrock:{region}:{account_id}:inference-profile/{model_id}"


class ModelCatalogue(Protocol):
    """The seam CreateModelInvocationJob checks a ``modelId`` through."""

    def supports(self, model_id: str, region: str, account_id: str) -> bool:
        """Whether ``account_id`` may start a batch job for ``model_id`` in ``region``."""
        ...

    def takes(self, model_id: str, invocation_type: str) -> bool:
        """Whether ``model_id`` takes batch jobs of ``modelInvocationType`` ``invocation_type``
        (an id the catalogue does not know: yes)."""
        ...


class AnyModel:
    """Every id is accepted (setting ``allow_any_model``: the behaviour before the catalogue)."""

    def supports(self, model_id: str, region: str, account_id: str) -> bool:
        return True

    def takes(self, model_id: str, invocation_type: str) -> bool:
        return True


@dataclass(frozen=True)
class Catalogue:
    """The data file, read: models by id, the sources and the date they were read."""

    models: Mapping[str, CatalogueModel]
    date: str
    sources: tuple[str, ...]
    defaults: Quotas

    def get(self, model_id: str) -> CatalogueModel | None:
        """The catalogued model a ``modelId`` names in any of its forms."""
        ref = parse_model_id(model_id)
        if ref is None or ref.kind not in {"foundation", "profile"}:
            return None
        return self.models.get(ref.base_id)

    def supports(self, model_id: str, region: str, account_id: str) -> bool:
        ref = parse_model_id(model_id)
        if ref is None:
            return False
        if ref.arn_region is not None and ref.arn_region != region:
            return False
        if ref.arn_account is not None and ref.arn_account != account_id:
            return False
        if ref.kind in {"application-profile", "custom"}:
            return ref.arn_account == account_id
        if ref.kind == "provisioned":
            return False
        model = self.models.get(ref.base_id)
        if model is None:
            return False
        if ref.kind == "profile":
            assert ref.geography is not None
            return model.profile_offered(ref.geography, region)
        return model.offered_in(region)

    def takes(self, model_id: str, invocation_type: str) -> bool:
        model = self.get(model_id)
        return model is None or invocation_type in model.invocation_types


@dataclass(frozen=True)
class RoutedOrCatalogued:
    """The catalogue, plus every id a models-config route matches (``routed``)."""

    catalogue: Catalogue
    routed: Callable[[str], bool]

    def supports(self, model_id: str, region: str, account_id: str) -> bool:
        return self.routed(model_id) or self.catalogue.supports(model_id, region, account_id)

    def takes(self, model_id: str, invocation_type: str) -> bool:
        # A routed id that Bedrock catalogues keeps the model's invocation types: the same
        # job would be refused on Bedrock.
        return self.catalogue.takes(model_id, invocation_type)


@cache
def load_catalogue() -> Catalogue:
    """The catalogue shipped with the package (read once)."""
    text = resources.files(__package__).joinpath("models.toml").read_text(encoding="utf-8")
    return parse_catalogue(tomllib.loads(text))


def parse_catalogue(data: Mapping[str, Any]) -> Catalogue:
    meta = data.get("meta", {})
    try:
        defaults = Quotas(**data["defaults"]["quotas"])
    except (KeyError, TypeError) as exc:
        raise CatalogueError(f"[defaults.quotas] is missing or malformed: {exc}") from exc
    models: dict[str, CatalogueModel] = {}
    for raw in data.get("models", []):
        model = _parse_model(raw, defaults)
        if model.id in models:
            raise CatalogueError(f"model {model.id} is listed twice")
        models[model.id] = model
    if not meta.get("date") or not meta.get("sources"):
        raise CatalogueError("[meta] must give the date and the sources")
    return Catalogue(models, str(meta["date"]), tuple(meta["sources"]), defaults)


_MODEL_KEYS = {
    "id",
    "name",
    "family",
    "invocation_types",
    "input_modalities",
    "regions",
    "profiles",
    "profile_regions",
    "quotas",
    "unconfirmed",
}


def _parse_model(raw: Mapping[str, Any], defaults: Quotas) -> CatalogueModel:
    where = f"model {raw.get('id', '?')}"
    unknown = set(raw) - _MODEL_KEYS
    if unknown:
        raise CatalogueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        invocation = tuple(raw["invocation_types"])
        modalities = tuple(raw["input_modalities"])
        profiles = tuple(raw.get("profiles", ()))
        quotas = Quotas(**{**asdict(defaults), **raw.get("quotas", {})})
        model = CatalogueModel(
            id=raw["id"],
            name=raw["name"],
            family=raw["family"],
            invocation_types=invocation,
            input_modalities=modalities,
            regions=tuple(raw["regions"]) if "regions" in raw else None,
            profiles=profiles,
            profile_regions=tuple(raw["profile_regions"]) if "profile_regions" in raw else None,
            quotas=quotas,
            unconfirmed=tuple(raw.get("unconfirmed", ())),
        )
    except (KeyError, TypeError) as exc:
        raise CatalogueError(f"{where}: {exc}") from exc
    if not set(invocation) <= INVOCATION_TYPES or not set(modalities) <= MODALITIES:
        raise CatalogueError(f"{where}: unknown invocation type or input modality")
    if not set(profiles) <= set(GEOGRAPHIES):
        raise CatalogueError(f"{where}: unknown profile geography in {profiles}")
    if model.regions == () and not profiles:
        raise CatalogueError(f"{where}: neither Regions nor profiles: it could never be used")
    return model
