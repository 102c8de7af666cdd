"""Stand-in for `modules.errors`: A1111 prints reports and carries on; the stub also records them."""

import traceback

reported: list[str] = []


def report(message: str, *, exc_info: bool = False) -> None:
    text = message + ("\n" + traceback.format_exc() if exc_info else "")
    reported.append(text)
    print(text)


def display(e: Exception, task: str, *, full_traceback: bool = False) -> None:
    report(f"{task}: {type(e).__name__}: {e}")
