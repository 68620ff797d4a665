"""Writes tests/fixtures/curate/: a webdataset shard as img2dataset (1.45) writes it, with
the parquet beside it, for the caption reader of `dataset extract-names` / `dataset curate`.

    webdataset/00000.tar      000000000.png/.txt/.json, 000000001.png/.json (caption only
                              in the parquet), 000000002.png/.json (no caption anywhere)
    webdataset/00000.parquet  img2dataset's columns, written by pyarrow (snappy, dictionary
                              pages, its defaults); row 000000003 failed to download (no
                              image in the tar), its caption is there
    no_caption/00000.tar      one sample
    no_caption/00000.parquet  img2dataset's columns without `caption`

Deterministic: reruns write identical bytes (tar mtimes fixed, parquet metadata fixed).
Run: .venv-pq/bin/python tools/reference/make_curate_fixtures.py (requirements-curate.txt).
"""
import io
import json
import os
import struct
import tarfile
import zlib

import pyarrow as pa
import pyarrow.parquet as pq

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "curate")


def png(r, g, b, w=4, h=4):
    raw = b"".join(b"\x00" + bytes([r, g, b]) * w for _ in range(h))

    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def tar(path, members):
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))


def table(rows, with_caption=True):
    cols = {
        "url": [r[0] for r in rows],
        "caption": [r[1] for r in rows],
        "key": [r[2] for r in rows],
        "status": [r[3] for r in rows],
        "error_message": [None if r[3] == "success" else "HTTP Error 404" for r in rows],
        "width": [4 if r[3] == "success" else None for r in rows],
        "height": [4 if r[3] == "success" else None for r in rows],
    }
    if not with_caption:
        del cols["caption"]
    return pa.table(cols)


def meta(key, caption):
    return json.dumps({"url": f"https://example.com/{key}.jpg", "caption": caption, "key": key,
                       "status": "success"}).encode()


def main():
    web = os.path.join(OUT, "webdataset")
    bad = os.path.join(OUT, "no_caption")
    os.makedirs(web, exist_ok=True)
    os.makedirs(bad, exist_ok=True)
    captions = {
        "000000000": "Ada Lovelace at the Royal Society",
        "000000001": "the Countess of Lovelace, portrait",
        "000000003": "Ada Lovelace, lost",
    }
    tar(os.path.join(web, "00000.tar"), [
        ("000000000.png", png(200, 10, 10)),
        ("000000000.txt", captions["000000000"].encode()),
        ("000000000.json", meta("000000000", captions["000000000"])),
        ("000000001.png", png(10, 200, 10)),
        ("000000001.json", meta("000000001", captions["000000001"])),
        ("000000002.png", png(10, 10, 200)),
        ("000000002.json", meta("000000002", None)),
    ])
    rows = [
        ("https://example.com/0.jpg", captions["000000000"], "000000000", "success"),
        ("https://example.com/1.jpg", captions["000000001"], "000000001", "success"),
        ("https://example.com/2.jpg", None, "000000002", "success"),
        ("https://example.com/3.jpg", captions["000000003"], "000000003", "failed_to_download"),
    ]
    pq.write_table(table(rows), os.path.join(web, "00000.parquet"))
    tar(os.path.join(bad, "00000.tar"), [
        ("000000000.png", png(1, 2, 3)),
        ("000000000.txt", b"Ada Lovelace"),
    ])
    pq.write_table(table(rows[:1], with_caption=False), os.path.join(bad, "00000.parquet"))
    # What was written reads back as intended.
    t = pq.read_table(os.path.join(web, "00000.parquet"))
    assert t.column("caption").to_pylist()[1] == captions["000000001"]
    assert "caption" not in pq.read_table(os.path.join(bad, "00000.parquet")).column_names
    print("wrote", OUT)


if __name__ == "__main__":
    main()
