"""One command line, start to exit: parse, resolve configuration, call, print.

Order of checks follows AWS CLI v2, because it decides which error a user sees first:
argument syntax -> auto-prompt flags -> profile -> pagination flags -> skeleton ->
``--cli-input-*`` -> required options -> ``--query`` -> output format and timestamp format
-> region -> credentials -> parameter validation -> request(s).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from batchrock.cli import cliargs, debuglog, protocol, validate
from batchrock.cli.argparser import (
    OUTPUT_CHOICES,
    build_service_parser,
    missing,
    parse_main,
)
from batchrock.cli.config import Config, parse_timeout
from batchrock.cli.errors import (
    ArgumentSyntaxError,
    CliError,
    NoCredentialsError,
    ParamValidationError,
    ServiceError,
    UnknownArgumentError,
)
from batchrock.cli.formatter import Formatter
from batchrock.cli.model import SERVICE_CLI_NAME, Operation, ServiceModel, load
from batchrock.cli.paginate import PageIterator
from batchrock.cli.transport import Transport, error_code, proxy_for


class Streams:
    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr


def version_line() -> str:
    """``batchrock-cli/<version> Python/<x.y.z> <OS>/<release> source/<arch>[.<distro>]``."""
    import platform

    from batchrock import __version__

    machine = platform.machine()
    try:
        release = platform.freedesktop_os_release()
        distro = release.get("ID", "")
        number = release.get("VERSION_ID", "").split(".")[0]
        if distro:
            machine += f".{distro}" + (f".{number}" if number else "")
    except OSError:
        pass
    return (
        f"batchrock-cli/{__version__} Python/{platform.python_version()} "
        f"{platform.system()}/{platform.release()} source/{machine}"
    )


def run(argv: Sequence[str], env: Mapping[str, str], streams: Streams) -> int:
    debug = "--debug" in argv
    if debug:
        _setup_debug(streams.stderr, argv)
    try:
        return _run(list(argv), env, streams)
    except KeyboardInterrupt:
        streams.stdout.write("\n")
        return 130
    except CliError as exc:
        if debug:
            debuglog.debug("Exception details", exc_info=True)
            debuglog.debug("Exiting with rc %s", exc.rc)
        _render_error(exc, env, argv, streams)
        return exc.rc
    except BrokenPipeError:
        import os as _os

        _os.dup2(_os.open(_os.devnull, _os.O_WRONLY), streams.stdout.fileno())
        return 255
    except Exception as exc:  # any other failure is reported like AWS CLI: message, rc 255
        if debug:
            debuglog.debug("Exception details", exc_info=True)
        _render_error(CliError(str(exc)), env, argv, streams)
        return 255


def _setup_debug(stderr: TextIO, argv: Sequence[str]) -> None:
    debuglog.enable(stderr)
    debuglog.debug("CLI version: %s", version_line())
    debuglog.debug("Arguments entered to CLI: %s", list(argv))


def _error_format(env: Mapping[str, str], argv: Sequence[str]) -> str:
    """--cli-error-format > AWS_CLI_ERROR_FORMAT > profile cli_error_format > enhanced; read
    from the raw arguments because the error may have happened while parsing them."""
    flag = None
    for i, arg in enumerate(argv):
        if arg == "--cli-error-format" and i + 1 < len(argv):
            flag = argv[i + 1]
        elif arg.startswith("--cli-error-format="):
            flag = arg.split("=", 1)[1]
    profile = None
    for i, arg in enumerate(argv):
        if arg == "--profile" and i + 1 < len(argv):
            profile = argv[i + 1]
    try:
        return Config.load(env, profile).error_format(flag)
    except CliError:
        return "enhanced"


def _render_error(
    exc: CliError, env: Mapping[str, str], argv: Sequence[str], streams: Streams
) -> None:
    fmt = _error_format(env, argv)
    structured = fmt in ("json", "yaml", "text", "table")
    if structured and isinstance(exc, ServiceError):
        details: dict[str, Any] = {"Message": exc.error_message, "Code": exc.error_code}
        details.update(exc.fields)
        Formatter(fmt, None, streams.stderr, "error").whole(details)
        return
    if structured and exc.code and not isinstance(exc, ArgumentSyntaxError | UnknownArgumentError):
        Formatter(fmt, None, streams.stderr, "error").whole(
            {"Code": exc.code, "Message": exc.message}
        )
        return
    text = exc.render()
    if fmt == "enhanced" and isinstance(exc, ServiceError):
        extra = {k: v for k, v in exc.fields.items() if k not in ("message", "Message", "code")}
        if extra:
            details_text = "\n".join(f"{k}: {v}" for k, v in extra.items())
            text = text[:-1] + f"\nAdditional error details:\n{details_text}\n"
    streams.stderr.write(text)


def _commands(model: ServiceModel) -> list[str]:
    return [SERVICE_CLI_NAME, *model.operations, "help"]


def _run(argv: list[str], env: Mapping[str, str], streams: Streams) -> int:
    model = load()
    ns, rest = parse_main(argv, _commands(model))
    ns.bare = not argv
    if ns.version:
        streams.stdout.write(version_line() + "\n")
        return 0
    if ns.cli_auto_prompt and ns.no_cli_auto_prompt:
        raise ParamValidationError(
            "Both --cli-auto-prompt and --no-cli-auto-prompt cannot be specified at the same time."
        )
    mode = "off" if ns.no_cli_auto_prompt else Config.load(env, ns.profile).auto_prompt()
    if ns.cli_auto_prompt or mode == "on":
        return _prompt_then_run(model, argv, env, streams)
    if mode == "on-partial":
        # Prompt only for a command line that is not complete yet.
        try:
            return _dispatch(model, ns, rest, env, streams)
        except ArgumentSyntaxError as exc:
            if not exc.message.startswith("the following arguments are required"):
                raise
            return _prompt_then_run(model, argv, env, streams)
    return _dispatch(model, ns, rest, env, streams)


def _prompt_then_run(
    model: ServiceModel, argv: list[str], env: Mapping[str, str], streams: Streams
) -> int:
    from batchrock.cli import prompt

    new_argv = prompt.prompt_for_command(model, argv, streams)
    if new_argv is None:
        streams.stdout.write("\n")
        return 130
    return _run([*new_argv, "--no-cli-auto-prompt"], env, streams)


def _dispatch(
    model: ServiceModel, ns: Any, rest: list[str], env: Mapping[str, str], streams: Streams
) -> int:
    if ns.command is None and (ns.help_flag or ns.bare):
        from batchrock.cli import help as helptext
        from batchrock.cli.main import ADMIN_COMMANDS

        streams.stdout.write(helptext.usage(model, ADMIN_COMMANDS))
        return 0
    if ns.command is None:
        raise missing("command")
    if ns.command == "help":
        from batchrock.cli import help as helptext

        _show_help(helptext.top_help(model), ns, env, streams)
        return 0
    if ns.help_flag:
        # `--help` after a command asks for that command's page, as the word `help` does.
        rest = [*rest, "help"]
    if ns.command == SERVICE_CLI_NAME:
        if rest[:1] == ["help"]:
            from batchrock.cli import help as helptext

            _show_help(helptext.service_help(model), ns, env, streams)
            return 0
        sns, rest = build_service_parser(list(model.operations)).parse_known_args(rest)
        if sns.operation is None:
            raise missing("operation")
        op_name = sns.operation
    else:
        op_name = ns.command
    op = model.operations[op_name]
    cfg = Config.load(env, ns.profile)
    invocation = Invocation(model, op, ns, rest, cfg, env, streams)
    if invocation.wants_help:
        from batchrock.cli import help as helptext

        _show_help(helptext.operation_help(model, op), ns, env, streams)
        return 0
    return invocation.execute()


def _show_help(text: str, ns: Any, env: Mapping[str, str], streams: Streams) -> None:
    """Help goes through the pager on a terminal, as AWS CLI's does."""
    from batchrock.cli.pager import output_stream

    pager = None if ns.no_cli_pager else Config.load(env, ns.profile).pager()
    with output_stream(streams.stdout, pager, env) as (out, _tty):
        out.write(text)


class Invocation:
    """One operation call with its parsed arguments and resolved configuration."""

    def __init__(
        self,
        model: ServiceModel,
        op: Operation,
        globals_ns: Any,
        rest: list[str],
        cfg: Config,
        env: Mapping[str, str],
        streams: Streams,
    ) -> None:
        self.model = model
        self.op = op
        self.g = globals_ns
        self.cfg = cfg
        self.env = env
        self.streams = streams
        self.table = cliargs.arg_table(model, op)
        parser = cliargs.operation_parser(self.table)
        self.args, unknown = parser.parse_known_args(rest)
        # As in AWS CLI, the first stray word is taken as a would-be "help": that word asks
        # for help, any other goes to the end of the unknown options.
        self.wants_help = self.args.help == "help"
        if self.args.help is not None and not self.wants_help:
            unknown.append(self.args.help)
        if unknown and not self.wants_help:
            raise UnknownArgumentError("Unknown options: " + ", ".join(unknown))

    # --- building the parameters -------------------------------------------------------

    def _cli_input(self) -> dict[str, Any] | None:
        j, y = self.args.cli_input_json, self.args.cli_input_yaml
        if j is not None and y is not None:
            raise ParamValidationError("Only one --cli-input- parameter may be specified.")
        if j is None and y is None:
            return None
        option = "--cli-input-json" if j is not None else "--cli-input-yaml"
        raw = cliargs.load_paramfile(j if j is not None else y, option)
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        if j is not None:
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise ParamValidationError(
                    "Error parsing parameter 'cli-input-json': Invalid JSON received."
                ) from exc
        else:
            from ruamel.yaml import YAML
            from ruamel.yaml.error import YAMLError

            try:
                data = YAML(typ="safe", pure=True).load(raw)
            except YAMLError as exc:
                raise ParamValidationError(
                    "Error parsing parameter 'cli-input-yaml': Invalid YAML received."
                ) from exc
        if not isinstance(data, dict):
            raise ParamValidationError(
                f"Error parsing parameter '{option}': Invalid type: expecting map, "
                f"received {type(data)}"
            )
        return data

    def _params(self, cli_input: dict[str, Any] | None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for arg in self.table:
            if arg.member is None:
                continue
            raw = getattr(self.args, arg.dest)
            if raw is None:
                continue
            params[arg.member] = cliargs.unpack(self.model, arg, raw)
        if cli_input:
            for key, value in cli_input.items():
                params.setdefault(key, value)
        elif cli_input is None:
            absent = [a.option for a in self.table if a.required and a.member not in params]
            if absent:
                raise missing(", ".join(absent))
        return params

    # --- running ---------------------------------------------------------------------

    def execute(self) -> int:
        a, g = self.args, self.g
        self.cfg.check_profile()
        paged = self.op.paginator
        # The hidden --max-results / --next-token switch pagination off like --no-paginate.
        hidden_paging = paged is not None and any(
            getattr(a, member, None) is not None
            for member in (paged["input_token"], paged.get("limit_key"))
            if member
        )
        if paged and (not g.paginate or hidden_paging):
            given = [
                name
                for name, value in (
                    ("--starting-token", a.starting_token),
                    ("--page-size", a.page_size),
                    ("--max-items", a.max_items),
                )
                if value is not None
            ]
            if given:
                raise ParamValidationError(
                    "Cannot specify --no-paginate along with pagination arguments: "
                    + ", ".join(given)
                )
        cli_input = self._cli_input()
        if a.generate_cli_skeleton in ("input", "yaml-input"):
            return self._print_input_skeleton(a.generate_cli_skeleton)
        params = self._params(cli_input)
        query = self._compile_query()
        output = self.cfg.output(g.output)
        if g.output is None and output not in OUTPUT_CHOICES:
            raise CliError(f"Unknown output type: {output}")
        ts_format = self.cfg.timestamp_format()
        if a.generate_cli_skeleton == "output":
            return self._print_output_skeleton(params, query, output)
        if paged and a.max_items is not None and a.max_items <= 0:
            self.streams.stderr.write(
                "warning: Non-positive values for --max-items may result in undefined behavior.\n"
            )
        region = self.cfg.region(g.region)
        endpoint = self.cfg.endpoint(g.endpoint_url)
        bearer = self.env.get("AWS_BEARER_TOKEN_BEDROCK") or None
        creds = None
        if g.sign_request and not bearer:
            from batchrock.cli import credentials

            creds = credentials.resolve(self.cfg)
            if creds is None:
                raise NoCredentialsError()
        from batchrock import __version__

        transport = Transport(
            endpoint=endpoint,
            region=region,
            service=self.model.metadata.get("signingName", "bedrock"),
            credentials=creds,
            bearer_token=bearer if g.sign_request else None,
            verify=g.verify_ssl,
            ca_bundle=self.cfg.ca_bundle(g.ca_bundle),
            connect_timeout=parse_timeout(g.cli_connect_timeout, "connect"),
            read_timeout=parse_timeout(g.cli_read_timeout, "read"),
            max_attempts=self.cfg.max_attempts(),
            user_agent=f"batchrock-cli/{__version__} md/batchrock",
            proxy=proxy_for(endpoint, self.env),
        )
        render_ts = protocol.ts_renderer(ts_format)

        def call(call_params: dict[str, Any]) -> dict[str, Any]:
            return self._call(transport, call_params, render_ts)

        paginate = bool(paged) and g.paginate and not hidden_paging
        if (
            paged
            and cli_input
            and (paged["input_token"] in cli_input or paged.get("limit_key") in cli_input)
        ):
            # AWS CLI v2 makes one call then, and passes any pagination options through as a
            # "PaginationConfig" parameter, which validation rejects.
            paginate = False
            config = {
                key: value
                for key, value in (
                    ("StartingToken", a.starting_token),
                    ("PageSize", a.page_size),
                    ("MaxItems", a.max_items),
                )
                if value is not None
            }
            if config:
                params["PaginationConfig"] = config
        with self._output_stream() as (out, tty):
            formatter = Formatter(
                output,
                query,
                out,
                self.op.name,
                color=self._color(tty),
                # colorama resets after every write to stdout itself; a pager pipe is not
                # wrapped, so nothing is added there (AWS CLI behaves the same).
                autoreset=self._color(tty) and out is self.streams.stdout,
                terminal_width=_terminal_width(),
            )
            try:
                if paginate and paged:
                    pages = PageIterator(
                        call,
                        params,
                        paged,
                        page_size=a.page_size,
                        max_items=a.max_items,
                        starting_token=a.starting_token,
                    )
                    formatter.paginated(pages)
                else:
                    formatter.single(call(params))
            finally:
                transport.close()
        if output == "table" and self._color(tty) and tty:
            # colorama's exit hook resets the terminal once more (AWS CLI prints it too).
            self.streams.stdout.write("\x1b[0m")
        return 0

    def _call(
        self,
        transport: Transport,
        params: dict[str, Any],
        render_ts: Any,
    ) -> dict[str, Any]:
        op, model = self.op, self.model
        protocol.fill_idempotency_tokens(model, op, params)
        if op.input:
            problems = validate.validate(model, params, model.shape(op.input))
            if problems:
                raise ParamValidationError("Parameter validation failed:\n" + "\n".join(problems))
        method, path, query, body = protocol.serialize(model, op, params)
        debuglog.debug("Making request for %s with params: %s", op.name, params)
        resp = transport.send(method, path, query, body)
        if resp.status >= 300:
            code, message, error_body = error_code(resp)
            exhausted = resp.attempts >= transport.max_attempts and transport.retryable(resp)
            raise ServiceError(
                code,
                message,
                op.name,
                retries=resp.attempts - 1 if exhausted else None,
                status=resp.status,
                fields=self._modeled_error_fields(code, error_body, render_ts),
            )
        try:
            data = resp.json()
        except ValueError as exc:
            raise CliError(f"Unable to parse response ({exc}), invalid JSON received") from exc
        if not op.output:
            return {}
        parsed = protocol.parse(model, model.shape(op.output), data, render_ts)
        return parsed if isinstance(parsed, dict) else {}

    def _modeled_error_fields(self, code: str, body: dict[str, Any], render_ts: Any) -> Any:
        """The body members the error's shape models (botocore adds these to the error)."""
        shape = self.model.shapes.get(code)
        if not shape or not shape.get("exception"):
            return {}
        return protocol.parse(self.model, shape, body, render_ts)

    def _compile_query(self) -> Any:
        if self.g.query is None:
            return None
        import jmespath
        from jmespath.exceptions import JMESPathError

        try:
            return jmespath.compile(self.g.query)
        except JMESPathError as exc:
            raise ParamValidationError(f"Bad value for --query {self.g.query}: {exc}") from exc

    def _print_input_skeleton(self, kind: str) -> int:
        from batchrock.cli import skeleton

        if kind == "yaml-input":
            from ruamel.yaml import YAML

            data = skeleton.yaml_input_skeleton(self.model, self.op.input)
            YAML().dump(data, self.streams.stdout)
            return 0
        data = skeleton.input_skeleton(self.model, self.op.input)
        self.streams.stdout.write(json.dumps(data, indent=4, default=_isoformat) + "\n")
        return 0

    def _print_output_skeleton(self, params: dict[str, Any], query: Any, output: str) -> int:
        from batchrock.cli import skeleton

        op, model = self.op, self.model
        protocol.fill_idempotency_tokens(model, op, params)
        if op.input:
            problems = validate.validate(model, params, model.shape(op.input))
            if problems:
                raise ParamValidationError("Parameter validation failed:\n" + "\n".join(problems))
        data = skeleton.output_skeleton(model, op.output)
        if op.output:
            problems = validate.validate(model, data, model.shape(op.output))
            if problems:
                raise ParamValidationError("Parameter validation failed:\n" + "\n".join(problems))
        Formatter(output, query, self.streams.stdout, op.name).single(
            json.loads(json.dumps(data, default=_isoformat))
        )
        return 0

    def _color(self, tty: bool) -> bool:
        if self.g.color == "on":
            return True
        if self.g.color == "off":
            return False
        return tty

    def _output_stream(self) -> Any:
        from batchrock.cli.pager import output_stream

        pager = None if self.g.no_cli_pager else self.cfg.pager()
        return output_stream(self.streams.stdout, pager, self.env)


def _isoformat(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80
