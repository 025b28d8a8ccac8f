"""``python -m tests.cli.fake_cli ARGS...`` is ``revive ARGS...`` that also knows the runbooks
of ``tests.cli.fake_runbooks``. Like ``revive``, it imports no Prefect before the command runs.
"""

from __future__ import annotations

from revive import cli
from revive.runs import catalog

for _name in ("gate", "aborted", "broken"):
    catalog.RUNBOOKS[_name] = ("tests.cli.fake_runbooks", _name, "FakeParams")

if __name__ == "__main__":
    cli.main()
