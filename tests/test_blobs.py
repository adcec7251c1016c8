"""tune_eskd.blobs: the one checksummed-blob format behind snapshots, soft labels and trial checkpoints."""
import hashlib
import json

import pytest

from tune_eskd.blobs import BAD_SIDECAR, CORRUPT, NO_DATA, NO_SIDECAR, Blob, BlobError
from tune_eskd.errors import UsageError


def test_write_then_read_round_trips_with_the_sha256_in_the_sidecar(tmp_path):
    blob = Blob.at(str(tmp_path / "a" / "x.pt"))
    assert not blob.exists()
    meta = blob.write(b"payload", {"epoch": 3})
    assert blob.exists() and blob.sidecar == str(tmp_path / "a" / "x.json")
    assert meta == {"epoch": 3, "sha256": hashlib.sha256(b"payload").hexdigest()}
    assert blob.read() == (b"payload", meta)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.json", "x.pt"]  # no temporary files left


def test_a_uri_filesystem_works_too(tmp_path):
    blob = Blob.at(f"file://{tmp_path}/x.pt")
    blob.write(b"abc", {})
    assert blob.read()[0] == b"abc"


def test_sidecars_written_before_this_module_still_read(tmp_path):
    """Stores on disk keep working: the sidecar format is the one snapshots and soft labels always wrote."""
    (tmp_path / "old.pt").write_bytes(b"w")
    (tmp_path / "old.json").write_text(json.dumps({"arch": "resnet8", "sha256": hashlib.sha256(b"w").hexdigest(),
                                                   "created": 1.0}))
    assert Blob.at(str(tmp_path / "old.pt")).read() == (b"w", json.loads((tmp_path / "old.json").read_text()))


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.with_suffix(".json").unlink(), NO_SIDECAR),
    (lambda p: p.with_suffix(".json").write_text("{not json"), BAD_SIDECAR),
    (lambda p: p.with_suffix(".json").write_text("[1, 2]"), BAD_SIDECAR),
    (lambda p: p.unlink(), NO_DATA),
    (lambda p: p.write_bytes(b"payl"), CORRUPT),
])
def test_damage_raises_an_error_with_fields_not_text_to_parse(tmp_path, damage, reason):
    path = tmp_path / "x.pt"
    blob = Blob.at(str(path))
    blob.write(b"payload", {})
    damage(path)
    with pytest.raises(BlobError) as info:
        blob.read()
    assert (info.value.reason, info.value.path, info.value.sidecar) == (reason, str(path), str(tmp_path / "x.json"))


def test_forget_and_discard(tmp_path):
    blob = Blob.at(str(tmp_path / "x.pt"))
    blob.write(b"p", {})
    blob.forget()
    assert not blob.exists() and (tmp_path / "x.pt").exists()  # reads as missing, so it is written again
    blob.forget()  # twice is fine (two repairers racing)
    blob.write(b"p", {})
    blob.discard()
    assert list(tmp_path.iterdir()) == []


def test_usage_error_keeps_problem_and_fix_apart():
    exc = UsageError("soft labels x.pt are truncated", "delete x.json and run ensure_soft_labels again")
    assert str(exc) == "soft labels x.pt are truncated: delete x.json and run ensure_soft_labels again"
    assert (exc.problem, exc.fix) == ("soft labels x.pt are truncated", "delete x.json and run ensure_soft_labels again")
    assert str(UsageError("one line")) == "one line" and UsageError("one line").fix is None


def test_discarding_a_snapshot_removes_its_validation_logits_too(tmp_path):
    import numpy as np

    from tune_eskd.snapshots import SnapshotStore
    from tune_eskd.teacher_stats import write_val_logits

    store = SnapshotStore(str(tmp_path))
    path = store.path("abc", 3)
    write_val_logits(path, np.zeros((4, 10)))
    Blob.at(path).write(b"weights", {})
    assert store.has("abc", 3) and len(list((tmp_path / "abc").iterdir())) == 4
    store.discard("abc", 3)
    assert not store.has("abc", 3) and list((tmp_path / "abc").iterdir()) == []
