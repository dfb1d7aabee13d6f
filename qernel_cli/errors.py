"""User-facing errors: the CLI prints their message as one line and exits non-zero."""

import errno


_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ESCAPED = {ord(c): repr(c)[1:-1] for c in _LINE_BREAKS}


def one_line(text: str) -> str:
    """``text`` with every character that breaks a line (``str.splitlines``) written as its escape."""
    return str(text).translate(_ESCAPED)


class QernelError(Exception):
    """An error caused by the user's input or environment, not by a bug; its message is one line."""

    exit_code = 2

    def __str__(self) -> str:
        return one_line(super().__str__())


_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large (file-size limit reached)",
}


def os_reason(error: OSError) -> str:
    """The system's reason for a failed file operation, in a few lowercase words (no path)."""
    reason = _REASONS.get(error.errno) or error.strerror or str(error) or type(error).__name__
    reason = " ".join(reason.split())
    return reason[:1].lower() + reason[1:] if error.strerror else reason


def os_error_message(error: OSError) -> str:
    """One line for a file operation the operating system refused: the reason and the path."""
    paths = [p for p in (error.filename, error.filename2) if p is not None]
    where = f": {' → '.join(str(p) for p in paths)}" if paths else ""
    return f"{os_reason(error)}{where}"
