"""Output formats: json, text, table, yaml, yaml-stream and off, with ``--query``.

json, table and yaml print the whole result (all pages joined, ``NextToken`` last) with the
query applied once. text and yaml-stream print page by page, applying the query to each page
(and text to the ``NextToken`` wrapper too), exactly as AWS CLI does; output already written
stays written when a later page fails.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TextIO

from batchrock.cli.errors import CliError

if TYPE_CHECKING:
    from batchrock.cli.paginate import PageIterator
from batchrock.cli.text import format_text

FORMATS = ("json", "text", "table", "yaml", "yaml-stream", "off")


class Formatter:
    def __init__(
        self,
        fmt: str,
        query: Any,
        out: TextIO,
        operation: str,
        *,
        color: bool = False,
        autoreset: bool = False,
        terminal_width: int = 80,
    ) -> None:
        if fmt not in FORMATS:
            raise CliError(f"Unknown output type: {fmt}")
        self.fmt = fmt
        self.query = query
        self.out = out
        self.operation = operation
        self.color = color
        self.autoreset = autoreset
        self.terminal_width = terminal_width

    def _search(self, value: Any) -> Any:
        return self.query.search(value) if self.query is not None else value

    # --- entry points ---------------------------------------------------------------

    def paginated(self, pages: PageIterator) -> None:
        if self.fmt == "text":
            for page in pages:
                self._text({pages.result_key: page.get(pages.result_key)})
            if pages.resume_token:
                self._text({"NextToken": {"NextToken": pages.resume_token}})
        elif self.fmt == "yaml-stream":
            for page in pages:
                self._yaml([self._search(page)])
        elif self.fmt == "off":
            for _ in pages:
                pass
        else:
            self.whole(pages.build_full_result())

    def single(self, response: dict[str, Any]) -> None:
        if self.fmt == "text":
            self._text(response)
        elif self.fmt == "yaml-stream":
            value = self._search(response)
            if value != {}:  # an operation without output prints nothing
                self._yaml([value])
        elif self.fmt != "off":
            self.whole(response)

    def whole(self, result: Any) -> None:
        value = self._search(result)
        if self.fmt == "json":
            if value != {}:
                json.dump(value, self.out, indent=4, ensure_ascii=False, default=str)
                self.out.write("\n")
        elif self.fmt == "table":
            from batchrock.cli.table import TableError, format_table

            try:
                format_table(
                    self.operation,
                    value,
                    self.out,
                    terminal_width=self.terminal_width,
                    color=self.color,
                    autoreset=self.autoreset,
                )
            except (TableError, AttributeError, TypeError) as exc:
                raise CliError(str(exc)) from exc
        elif self.fmt == "yaml":
            if value != {}:
                self._yaml(value)
        elif self.fmt == "text":
            self._text(result)

    # --- helpers --------------------------------------------------------------------

    def _text(self, value: Any) -> None:
        try:
            format_text(self._search(value), self.out)
        except (AttributeError, TypeError) as exc:  # odd query shapes, as AWS CLI reports them
            raise CliError(str(exc)) from exc

    def _yaml(self, value: Any) -> None:
        if value is None or isinstance(value, int | float | bool | str):
            # A bare scalar would end in "..." in YAML; AWS CLI prints it as JSON.
            json.dump(value, self.out, ensure_ascii=False)
            self.out.write("\n")
            return
        from ruamel.yaml import YAML

        # AWS CLI v2's dumper: the safe dumper (C emitter when ruamel.yaml.clib is there),
        # block style.
        yaml = YAML(typ="safe")
        yaml.encoding = None  # type: ignore[assignment]  # the stream is already text
        yaml.representer.default_flow_style = False
        yaml.dump(value, self.out)
