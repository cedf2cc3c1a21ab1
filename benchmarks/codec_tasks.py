"""The codec side of `make bench-compression`, run with .codec-venv/bin/python (FLAC and
WavPack for numcodecs live there, not in the services' environment).

    codec_tasks.py DATA.npy CHUNK_T CHUNK_C
        every codec on DATA (samples x channels int16), cut into the store's inner chunks
        (CHUNK_T samples x CHUNK_C channels); prints one JSON line per codec: ratio, encode
        and decode MB/s on one core, and whether decoding gave back every sample (it must).
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np


def _blosc(cname: str, level: int, shuffle: int):
    from numcodecs import Blosc

    return Blosc(cname=cname, clevel=level, shuffle=shuffle, blocksize=0)


class TimeDelta:
    """Blosc over the first difference along time (each channel's first sample kept)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def encode(self, x: np.ndarray) -> bytes:
        d = np.empty_like(x)
        d[0] = x[0]
        np.subtract(x[1:], x[:-1], out=d[1:])
        return self.inner.encode(d)

    def decode(self, buf: bytes, shape) -> np.ndarray:
        d = np.frombuffer(self.inner.decode(buf), dtype=np.int16).reshape(shape)
        return np.cumsum(d, axis=0, dtype=np.int16)


def codecs() -> dict:
    from numcodecs import Blosc

    out = {
        "blosc-zstd1-bitshuffle": _blosc("zstd", 1, Blosc.BITSHUFFLE),
        "blosc-zstd5-bitshuffle (today)": _blosc("zstd", 5, Blosc.BITSHUFFLE),
        "blosc-zstd9-bitshuffle": _blosc("zstd", 9, Blosc.BITSHUFFLE),
        "blosc-lz4-bitshuffle": _blosc("lz4", 5, Blosc.BITSHUFFLE),
        "delta + blosc-zstd5-bitshuffle": TimeDelta(_blosc("zstd", 5, Blosc.BITSHUFFLE)),
    }
    try:
        from flac_numcodecs import Flac

        out["flac level 5"] = Flac(level=5)
        out["flac level 8"] = Flac(level=8)
    except ImportError as exc:
        print(json.dumps({"codec": "flac", "missing": str(exc)}), flush=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from wavpack_numcodecs import WavPack

            out["wavpack level 2"] = WavPack(level=2, num_decoding_threads=1, num_encoding_threads=1)
            out["wavpack level 3"] = WavPack(level=3, num_decoding_threads=1, num_encoding_threads=1)
    except (ImportError, TypeError) as exc:
        print(json.dumps({"codec": "wavpack", "missing": str(exc)}), flush=True)
    return out


def main() -> None:
    path, chunk_t, chunk_c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    x = np.load(path)
    chunks = [np.ascontiguousarray(x[t : t + chunk_t, c : c + chunk_c])
              for t in range(0, x.shape[0] - chunk_t + 1, chunk_t) for c in range(0, x.shape[1], chunk_c)]
    raw = sum(ch.nbytes for ch in chunks)
    for name, codec in codecs().items():
        warnings.simplefilter("ignore")
        t0 = time.process_time()
        encoded = [codec.encode(ch) for ch in chunks]
        enc_s = time.process_time() - t0
        t0 = time.process_time()
        if isinstance(codec, TimeDelta):
            decoded = [codec.decode(e, ch.shape) for e, ch in zip(encoded, chunks, strict=True)]
        else:
            decoded = []
            for e, ch in zip(encoded, chunks, strict=True):
                out = np.empty_like(ch)
                codec.decode(e, out=out)
                decoded.append(out)
        dec_s = time.process_time() - t0
        exact = all(np.array_equal(d, ch) for d, ch in zip(decoded, chunks, strict=True))
        print(json.dumps({"codec": name, "ratio": raw / sum(len(e) for e in encoded),
                          "encode_mb_s": raw / 1e6 / enc_s, "decode_mb_s": raw / 1e6 / dec_s,
                          "lossless": exact}), flush=True)


if __name__ == "__main__":
    main()
