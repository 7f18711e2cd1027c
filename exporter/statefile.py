"""``--state.file``: what areas need to survive a restart (the run ledger), as one JSON file.

One section per (account, area). Written atomically (temp file in the same directory, fsync,
rename), so a crash mid-write leaves the previous file. A missing file is a first start; a
corrupt or unreadable one is logged and ignored: the areas start from a clean baseline.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = "spacelift-exporter-state/1"
# Far above a large account's run ledger (a few MB); a bigger file is not ours.
MAX_BYTES = 256 << 20


def _sections(data: bytes) -> dict[str, Any]:
    """The sections of a state file, or ValueError/RecursionError for anything else."""
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES >> 20} MiB")
    raw = json.loads(data.decode("utf-8"), parse_constant=_no_constant)  # deep: RecursionError
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError("not a spacelift-exporter state file")
    sections = raw.get("sections")
    if not isinstance(sections, dict):
        raise ValueError("sections is not a mapping")
    return sections


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; restored into counters they would be exported as they are.
    raise ValueError(f"{name} is not a number")


def section_key(account: str, area: str) -> str:
    return f"{account}/{area}"


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._sections: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        """Read the file; {} (with a log line) when it is missing, unreadable or corrupt."""
        try:
            with self.path.open("rb") as f:
                data = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            log.info(
                "no state file yet, starting from a clean baseline", extra={"path": str(self.path)}
            )
            return {}
        except OSError as exc:
            log.warning(
                "state file unreadable, starting from a clean baseline",
                extra={"path": str(self.path), "error": exc.strerror},
            )
            return {}
        try:
            sections = _sections(data)
        except (ValueError, KeyError, RecursionError) as exc:
            log.warning(
                "state file corrupt, starting from a clean baseline",
                extra={"path": str(self.path), "error": str(exc)[:200] or type(exc).__name__},
            )
            return {}
        with self._lock:
            self._sections = dict(sections)
        return dict(sections)

    def save(self, key: str, data: Any) -> bool:
        """Replace one section and rewrite the file atomically; False (logged) on failure."""
        with self._lock:
            self._sections[key] = data
            payload = json.dumps(
                {"format": FORMAT, "sections": self._sections}, separators=(",", ":")
            )
            directory = self.path.parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=directory)
                try:
                    with os.fdopen(fd, "w") as f:
                        f.write(payload)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, self.path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            except OSError as exc:
                log.warning(
                    "cannot write the state file",
                    extra={"path": str(self.path), "error": exc.strerror},
                )
                return False
            return True
