"""User-facing data errors: they name the file, the row and the column."""

from __future__ import annotations


class DataError(Exception):
    """Bad user input. The CLI prints ``str(err)`` and exits with status 2, without a traceback.

    ``row`` is the 1-based data row within ``file`` (the header is not a row); for text files
    ``line`` is the physical line number of that row.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        line: int | None = None,
        value: object = None,
        hint: str | None = None,
    ):
        self.message, self.file, self.row, self.column = message, file, row, column
        self.line, self.value, self.hint = line, value.item() if hasattr(value, "item") else value, hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [f"file {self.file}"] if self.file else []
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line else ""))
        if self.column is not None:
            where.append(f"column '{self.column}'")
        text = (", ".join(where) + ": " if where else "") + self.message
        if self.value is not None:
            text += f" (value: {self.value!r})"
        if self.hint:
            text += f". {self.hint}"
        return text
