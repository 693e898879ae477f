"""The README's API block runs as written and says what it returns."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def api_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## The API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_api_block_runs_and_its_comments_hold():
    namespace: dict = {}
    exec(compile(api_block(), "README.md", "exec"), namespace)
    r = namespace["r"]
    # The comments in the block state these values; keep them true.
    assert r.report.status("dense_2") == "reinitialized"
    assert r.report.row("dense_2").reason == "kernel (32, 1) -> (64, 1)"
    assert list(r.report.to_frame().columns) == ["layer", "type", "status", "reason", "params", "trainable",
                                                 "source", "is_container"]
    editor = namespace["editor"]
    assert editor.model is not None
    close = getattr(editor, "close", None)
    if close is not None:
        close()
