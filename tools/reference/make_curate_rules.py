"""Writes tests/fixtures/curate/rules.{json,safetensors}: the rules of LaionCele steps 5-8,
applied by a plain Python re-implementation to seeded embeddings, for
magicnaming-models/tests/models/curate_rules.rs to check the library's rule functions
against (`consistency`, `dedup_rule`, `match_real`, and step 8's count).

The rules (docs/METHOD.md; README "Building a LaionCele-style dataset"):
- step 5: a name stays when >= 2 of its generated images show a face and the mean cosine
  over all pairs of those faces is >= gen_consistency;
- step 6: per person in order, an image with the same content as a kept one is an exact
  copy of the first such; else one whose embedding cosine with a kept one is >= dedup is a
  near copy of the first such; else kept;
- step 7: each face of a real image scores its mean cosine with the generated faces; the
  best (first on ties) must reach real_match and be face 0 (the largest);
- step 8: a person stays with >= min_images images.

Embeddings are L2-normalised in float64, stored as float32; every expectation is computed
from the stored float32 values in float64, and every score is kept at least 1e-3 from its
threshold so that float32 accumulation in Rust decides the same way.
Standard library only. Run: python3 tools/reference/make_curate_rules.py
"""
import json
import math
import os
import random
import struct

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "curate")
DIM = 16
MARGIN = 1e-3
rng = random.Random(20251202)
tensors = {}


def f32(v):
    return [struct.unpack("<f", struct.pack("<f", x))[0] for x in v]


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return f32([x / n for x in v])


def gauss():
    return [rng.gauss(0, 1) for _ in range(DIM)]


def near(center, spread):
    return unit([c + spread * g for c, g in zip(center, gauss())])


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def put(name, rows):
    tensors[name] = (len(rows), DIM, b"".join(struct.pack("<%df" % DIM, *r) for r in rows))


def clear(value, threshold):
    return abs(value - threshold) >= MARGIN


def step5(threshold):
    cases = []
    for k, (faces, spread) in enumerate([(4, 0.1), (4, 0.6), (3, 0.3), (2, 1.5), (1, 0.1),
                                         (0, 0.0), (4, 0.9), (4, 0.45), (2, 0.2), (3, 2.0)]):
        while True:
            c = unit(gauss())
            rows = [near(c, spread) for _ in range(faces)]
            pairs = [dot(rows[i], rows[j]) for i in range(faces) for j in range(i + 1, faces)]
            mean = sum(pairs) / len(pairs) if pairs else None
            if mean is None or clear(mean, threshold):
                break
        name = f"s5_{k}"
        put(name, rows) if rows else None
        cases.append({"tensor": name if rows else None, "images": 4, "faces": faces,
                      "mean": mean, "kept": faces >= 2 and mean >= threshold})
    return {"gen_consistency": threshold, "cases": cases}


def step6(threshold):
    people = []
    for k in range(6):
        n = 8
        base = [unit(gauss()) for _ in range(n)]
        content = list(range(n))
        emb = list(base)
        # Plant exact copies (same content, same embedding) and near copies.
        for i in range(2, n):
            r = rng.random()
            if r < 0.25:
                j = rng.randrange(i)
                content[i], emb[i] = content[j], emb[j]
            elif r < 0.55:
                j = rng.randrange(i)
                emb[i] = near(emb[j], rng.choice([0.05, 0.2, 0.35]))
        # Re-draw until no cosine sits within MARGIN of the threshold.
        if any(not clear(dot(emb[i], emb[j]), threshold)
               for i in range(n) for j in range(i) if content[i] != content[j]):
            return step6(threshold)
        kept, verdicts = [], []
        for i in range(n):
            exact = next((j for j in kept if content[j] == content[i]), None)
            if exact is not None:
                verdicts.append(["exact", exact])
                continue
            nearest = next((j for j in kept if dot(emb[i], emb[j]) >= threshold), None)
            if nearest is not None:
                verdicts.append(["near", nearest])
                continue
            kept.append(i)
            verdicts.append(["keep", None])
        name = f"s6_{k}"
        put(name, emb)
        people.append({"tensor": name, "content": content, "verdicts": verdicts})
    return {"dedup": threshold, "people": people}


def step7(threshold):
    center = unit(gauss())
    gen = [near(center, 0.3) for _ in range(4)]
    put("s7_generated", gen)
    images = []
    for k in range(14):
        while True:
            faces = []
            for _ in range(rng.choice([0, 1, 1, 2, 3])):
                faces.append(near(center, rng.choice([0.2, 0.5, 1.0, 3.0])) if rng.random() < 0.7
                             else unit(gauss()))
            scores = [sum(dot(f, g) for g in gen) / len(gen) for f in faces]
            if all(clear(s, threshold) for s in scores):
                break
        best = None
        for i, s in enumerate(scores):
            if best is None or s > best[1]:
                best = (i, s)
        kept = best is not None and best[1] >= threshold and best[0] == 0
        name = f"s7_{k}"
        put(name, faces) if faces else None
        images.append({"tensor": name if faces else None, "faces": len(faces),
                       "best": list(best) if best else None, "kept": kept})
    return {"real_match": threshold, "images": images}


def step8(min_images):
    counts = [rng.randrange(0, 12) for _ in range(12)]
    return {"min_images": min_images, "counts": counts, "kept": [c >= min_images for c in counts]}


def safetensors_bytes():
    header, offset, body = {}, 0, b""
    for name in sorted(tensors):
        rows, dim, data = tensors[name]
        header[name] = {"dtype": "F32", "shape": [rows, dim], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        body += data
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + body


def main():
    os.makedirs(OUT, exist_ok=True)
    rules = {"dim": DIM, "step5": step5(0.5), "step6": step6(0.9), "step7": step7(0.4),
             "step8": step8(6)}
    s5 = [c["kept"] for c in rules["step5"]["cases"]]
    s7 = [i["kept"] for i in rules["step7"]["images"]]
    s6 = [v[0] for p in rules["step6"]["people"] for v in p["verdicts"]]
    # Each rule keeps some and drops some.
    assert any(s5) and not all(s5) and any(s7) and not all(s7), (s5, s7)
    assert {"keep", "exact", "near"} <= set(s6), s6
    with open(os.path.join(OUT, "rules.json"), "w") as f:
        json.dump(rules, f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "rules.safetensors"), "wb") as f:
        f.write(safetensors_bytes())
    print("step 5 kept", sum(s5), "of", len(s5), "; step 7 kept", sum(s7), "of", len(s7),
          "; step 6", {k: s6.count(k) for k in ("keep", "exact", "near")})


if __name__ == "__main__":
    main()
