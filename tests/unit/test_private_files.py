"""The data dir and what it keeps are for the server's user alone; keys are made
once, whole, however many servers start at the same moment."""

from __future__ import annotations

import logging
import multiprocessing
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from portway.private import private_dir, read_or_create
from portway.serving.ledger_journal import Journal
from portway.serving.media import MediaKeyError, MediaStore
from portway.store import Store
from portway.store.secrets import SecretBox

STARTS = 8
"""Servers starting at once in the concurrency tests."""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_dir_is_private(tmp_path: Path) -> None:
    data_dir = private_dir(tmp_path / "a" / "data")
    assert mode(data_dir) == 0o700


def test_an_open_data_dir_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "open"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="portway.files"):
        private_dir(data_dir)
    assert mode(data_dir) == 0o755
    assert f"{data_dir} is open to other local users (mode 0755)" in caplog.text


async def test_the_database_and_its_wal_are_private(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'portway.db'}")
    try:
        await store.ensure_user("someone")
        found = sorted((tmp_path / "data").iterdir())
        assert {path.name for path in found} >= {"portway.db", "portway.db-wal"}
        assert {path.name: mode(path) for path in found} == {path.name: 0o600 for path in found}
        assert mode(tmp_path / "data") == 0o700
    finally:
        await store.close()


def test_keys_and_media_files_are_private(tmp_path: Path) -> None:
    SecretBox.open(tmp_path)
    media = MediaStore.open(tmp_path)
    link = media.put(b"\x89PNG", "png", 60)
    assert mode(tmp_path / "secrets.key") == 0o600
    assert mode(tmp_path / "media.key") == 0o600
    assert mode(tmp_path / "media") == 0o700
    [stored] = (tmp_path / "media").iterdir()
    assert mode(stored) == 0o600
    assert link.startswith("/media/")


def test_the_usage_journal_and_its_segments_are_private(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "ledger")
    journal.append(b"{}\n")
    journal.close()
    assert mode(tmp_path / "ledger") == 0o700
    assert {mode(path) for path in (tmp_path / "ledger").iterdir()} == {0o600}


def test_an_empty_media_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "media.key").write_text("")
    with pytest.raises(MediaKeyError, match="remove it"):
        MediaStore.open(tmp_path)


def _secret_probe(data_dir: str) -> bytes:
    return SecretBox.open(Path(data_dir)).encrypt("probe")


def _media_probe(data_dir: str) -> str:
    return MediaStore.open(Path(data_dir)).put(b"\x89PNG", "png", 600)


Probe = Callable[[str], object]
"""A first start in a data dir, giving what it shows of the key it got."""


def _start_together(barrier: threading.Barrier, work: Probe, data_dir: str) -> object:
    barrier.wait()
    return work(data_dir)


def _in_threads(work: Probe, data_dir: Path) -> list[object]:
    barrier = threading.Barrier(STARTS)
    with ThreadPoolExecutor(STARTS) as pool:
        futures = [
            pool.submit(_start_together, barrier, work, str(data_dir)) for _ in range(STARTS)
        ]
        return [future.result() for future in futures]


def _process_start(barrier: Any, work: Probe, data_dir: str, out: Any) -> None:
    barrier.wait()
    try:
        out.put(work(data_dir))
    except Exception as exc:
        out.put(exc)


def _in_processes(work: Probe, data_dir: Path) -> list[object]:
    context = multiprocessing.get_context("fork")
    barrier, out = context.Barrier(STARTS), context.Queue()
    processes = [
        context.Process(target=_process_start, args=(barrier, work, str(data_dir), out))
        for _ in range(STARTS)
    ]
    for process in processes:
        process.start()
    results = [out.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(60)
    return results


RUNS = [("threads", _in_threads), ("processes", _in_processes)]


@pytest.mark.parametrize(("how", "run"), RUNS, ids=[how for how, _ in RUNS])
def test_concurrent_first_starts_share_one_secrets_key(
    tmp_path: Path, how: str, run: Callable[[Probe, Path], list[object]]
) -> None:
    for round_ in range(10):
        data_dir = tmp_path / f"{how}-{round_}"
        data_dir.mkdir()
        ciphertexts = run(_secret_probe, data_dir)
        box = SecretBox.open(data_dir)
        for ciphertext in ciphertexts:
            assert isinstance(ciphertext, bytes), ciphertext
            assert box.decrypt(ciphertext, "probe") == "probe"


@pytest.mark.parametrize(("how", "run"), RUNS, ids=[how for how, _ in RUNS])
def test_concurrent_first_starts_share_one_media_key(
    tmp_path: Path, how: str, run: Callable[[Probe, Path], list[object]]
) -> None:
    for round_ in range(10):
        data_dir = tmp_path / f"{how}-{round_}"
        data_dir.mkdir()
        links = run(_media_probe, data_dir)
        media = MediaStore.open(data_dir)
        for link in links:
            assert isinstance(link, str), link
            parts = urlsplit(link)
            query = {key: values[0] for key, values in parse_qs(parts.query).items()}
            media.locate(parts.path.removeprefix("/media/"), query["expires"], query["signature"])


def test_read_or_create_never_shows_a_partial_file(tmp_path: Path) -> None:
    key = tmp_path / "some.key"
    made = _in_threads(lambda _: read_or_create(key, lambda: b"x" * 100_000), tmp_path)
    assert made == [b"x" * 100_000] * STARTS
    assert [path.name for path in tmp_path.iterdir()] == ["some.key"]
