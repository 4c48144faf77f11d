"""Concurrent processes on one run folder and one content cache (shards, SLURM jobs, evaluation
workers): writers of the same and of different keys never corrupt a file, and a reader running
alongside never sees a partial one."""

import hashlib
import multiprocessing as mp

import numpy as np
import torch
from PIL import Image

from monkey.cache import ContentCache
from monkey.store import RunStore

WRITERS = 3
ROUNDS = 6
SHARED = 2  # keys every writer writes (the same content, as content-addressed keys do)
SHARED_NAMES = [f"shared-{k}" for k in range(SHARED)]


def pool(processes: int):
    """Worker processes forked from a server that imported torch once (spawning each one costs an import
    of torch; forking the test process itself is unsafe once torch's thread pools exist)."""
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["torch", "safetensors.torch", "PIL.Image", "monkey.cache", "monkey.store"])
    return context.Pool(processes)


def key_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def tensors_of(name: str) -> dict[str, torch.Tensor]:
    """Content determined by the key's name, large enough (1 MiB) that a write takes a while."""
    seed = int(key_of(name)[:8], 16)
    values = torch.arange(512 * 512, dtype=torch.float32) + seed % 1000
    return {"embedding": values.reshape(512, 512), "seed": torch.tensor([seed % 1000])}


def names(writer: int, round_: int) -> list[str]:
    return [*SHARED_NAMES, f"own-{writer}-{round_}"]


def _write_cache(args: tuple[str, int]) -> int:
    root, writer = args
    cache = ContentCache(root, "embeddings")
    for round_ in range(ROUNDS):
        for name in names(writer, round_):
            cache.put_tensors(key_of(name), tensors_of(name))
    return writer


def test_cache_concurrent_writers_and_reader(tmp_path):
    all_names = sorted({name for w in range(WRITERS) for r in range(ROUNDS) for name in names(w, r)})
    reader = ContentCache(tmp_path, "embeddings")
    reads = 0
    with pool(WRITERS) as workers:
        pending = workers.map_async(_write_cache, [(str(tmp_path), w) for w in range(WRITERS)])
        while not pending.ready():
            for name in SHARED_NAMES:  # the keys being rewritten right now
                got = reader.get_tensors(key_of(name))
                if got is not None:  # present means complete: never a partial or mixed file
                    expected = tensors_of(name)
                    assert set(got) == set(expected)
                    assert all(torch.equal(got[k], expected[k]) for k in expected), name
                    reads += 1
        assert pending.get(timeout=120) == list(range(WRITERS))
    assert reads > 0
    for name in all_names:  # every key readable and right after the writers are done
        got = reader.get_tensors(key_of(name))
        assert got is not None and torch.equal(got["embedding"], tensors_of(name)["embedding"])
    leftovers = [p for p in (tmp_path / "embeddings").rglob("*") if p.is_file() and p.suffix != ".safetensors"]
    assert leftovers == []  # no temp files left behind


def image_of(name: str) -> Image.Image:
    seed = int(key_of(name)[:8], 16)
    pixels = np.random.default_rng(seed).integers(0, 256, (384, 384, 3), dtype=np.uint8)  # ~440 KB as PNG
    return Image.fromarray(pixels)


# the other fields every reader checks (monkey.manifest_rows)
ROW_FIELDS = {"config_hash": "h", "plan_index": 0, "dataset": "d", "subject": "s", "source_path": "/s.jpg",
              "plan_prompt": "p", "prompt": "p", "seed": 0}  # fmt: skip


def _write_run(args: tuple[str, int]) -> None:
    root, writer = args
    store = RunStore(root)
    with store.writer("m", f"shard-{writer}") as manifest:
        for round_ in range(ROUNDS):
            for name in names(writer, round_):
                relpath = f"images/{name}.png"
                store.write_image(relpath, image_of(name), text={"name": name})
                store.register_config("m", "h" + name[:4], {"writer": "any", "name": name[:4]})
                if name.startswith("own"):
                    manifest.append({"method": "m", "item_id": name, "status": "ok", "image": relpath,
                                     "payload": name * 300, "created": 1.0, **ROW_FIELDS})  # fmt: skip


def test_run_folder_concurrent_writers_and_reader(tmp_path):
    store = RunStore(tmp_path)
    images = {name: np.asarray(image_of(name)) for w in range(WRITERS) for r in range(ROUNDS) for name in names(w, r)}
    seen = 0
    with pool(WRITERS) as workers:
        pending = workers.map_async(_write_run, [(str(tmp_path), w) for w in range(WRITERS)])
        while not pending.ready():
            rows = store.rows("m")
            assert all(row["payload"] == row["item_id"] * 300 for row in rows)  # no torn or mixed rows
            assert len(rows) >= seen  # a row once visible stays visible
            seen = len(rows)
            for name in [*SHARED_NAMES, *(row["item_id"] for row in store.finished("m").values())]:
                path = tmp_path / "images" / f"{name}.png"
                if path.is_file():  # present means complete, also while other processes rewrite it
                    with Image.open(path) as image:
                        assert np.array_equal(np.asarray(image), images[name]), name
        pending.get(timeout=120)
    assert len(store.finished("m")) == WRITERS * ROUNDS
    for k in range(SHARED):  # written by every process at once: still one complete, right image
        with Image.open(tmp_path / "images" / f"shared-{k}.png") as image:
            assert np.array_equal(np.asarray(image), np.asarray(image_of(f"shared-{k}")))
    assert not [p for p in tmp_path.rglob("*.tmp")]
