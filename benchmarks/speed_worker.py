"""One engine of benchmarks/speed.py, timed in a process of its own.

    python benchmarks/speed_worker.py ours --dtype int8 --model FOLDER --corpora corpora.json --out DIR
    benchmarks/peers/.venv/bin/python benchmarks/speed_worker.py sentence-transformers --backend openvino ...

speed.py starts one of these per engine, so that no runtime's idle threads or memory are left over
when the next engine runs. The worker loads the engine, warms it up on the first 64 mixed texts,
times every corpus of --corpora (best of --repeats) at the engine's default batch, then the short
corpus once per batch size of --sweep, and writes into --out:

- `<corpus>.npy`: the (N, C) float32 normalized embeddings of that corpus, in input order (from
  the default batch's timing);
- `result.json`: seconds per corpus, seconds per swept batch size (short corpus), load_s (loading,
  including the engine library's import and any export or quantization, plus the warm-up: what a
  user waits for the first batch), the process's peak RSS, the RSS growth while the engine loaded
  and ran, the dtype its matmuls ran in (speed.py picks the roofline's peak by it) and a note.

The default batch is the engine's own: sentence-transformers' and ONNX Runtime's 32, and for ours
no batch argument at all (whatever `SentenceEncoder.encode` picks), unless --batch-size or
--max-batch-tokens ask for one. The sweep passes a batch size and nothing else, so a row's own
--max-batch-tokens still holds there.

Engines: `ours` (minilm's SentenceEncoder, any --dtype, optionally under torch.compile),
`onnxruntime` (our fp32 encoder exported with torch.onnx, our tokenizer and pooling) and
`sentence-transformers` (--backend torch, onnx or openvino; onnx int8 dynamically quantized with
--quantize, openvino int8 statically quantized by NNCF with --static-int8, calibrated on STS-B dev
sentences read from ../shared/data, offline). The sentence-transformers engine is also the peers'
worker: speed.py runs it with the interpreter of benchmarks/peers/.venv, which has no minilm, so
this file imports minilm only inside the engines that use it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

PROJECT = Path(__file__).resolve().parent.parent
STSB_DEV = PROJECT.parent / "shared" / "data" / "stsbenchmark" / "sts-dev.csv"  # static int8's calibration text
WARM_UP_TEXTS = 64
ST_BATCH_SIZE = 32  # sentence-transformers' default batch (and ONNX Runtime's here)

Embed = Callable[[list[str], int | None], np.ndarray]  # (texts, batch size or None: the engine's default) -> (N, C)


@dataclass
class Loaded:
    embed: Embed
    compute: str  # the dtype the matmuls run in ("float32", "bfloat16", "float16", "int8"): picks the roofline
    note: str = ""


@dataclass
class Result:
    seconds: dict[str, float]  # corpus -> best wall time of one encode of the whole corpus, default batch
    sweep: dict[int, float]  # batch size -> wall time of one encode of the short corpus at that size
    load_s: float  # load (import, export, quantization) plus warm-up
    warmup_s: float  # the warm-up alone: torch.compile's compile time, where it is on
    peak_rss_mb: float  # this process's peak resident memory, imports included
    rss_growth_mb: float  # peak RSS minus the RSS before the engine's load
    compute: str
    note: str
    versions: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def process_peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM, the high-water mark of its own address space.

    Not getrusage's ru_maxrss: Linux carries the parent's peak across fork and exec into it, so a
    worker started by a large parent would report at least the parent's size.
    """
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024  # kB
    import resource  # no /proc: ru_maxrss (kB on Linux), an upper bound

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[dict[str, float]]:
    """Samples RSS every 2 ms; yields a dict that gets 'mb': the peak minus the RSS at entry."""
    base = rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            peak[0] = max(peak[0], rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    result: dict[str, float] = {}
    try:
        yield result
    finally:
        done.set()
        thread.join()
        result["mb"] = (max(peak[0], rss_bytes()) - base) / 2**20


# ---------------------------------------------------------------------------- engines


def use_project() -> None:
    """Makes minilm importable from this checkout, for the engines that run it. Only for those:
    a peer's worker must run on its own venv's packages, which include no minilm."""
    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))


def load_ours(args: argparse.Namespace) -> Loaded:
    """minilm's SentenceEncoder in --dtype. --forced runs that dtype even where the encoder would
    fall back to float32 (to show why it does); --compile wraps the runner in torch.compile; --fuse
    runs int8 fused (minilm.model.fused), its compile in the load time."""
    use_project()
    from minilm import SentenceEncoder
    from minilm.model.precision import inference_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the fallback's warning becomes the note
        encoder = SentenceEncoder.from_pretrained(
            args.model, dtype="float32" if args.forced else args.dtype, fuse=args.fuse
        )
    if args.forced:
        encoder.dtype, encoder.runner = args.dtype, inference_model(encoder.model, args.dtype)
    note = encoder.auto_choice or ""
    if args.dtype not in ("auto", encoder.dtype):
        note = f"falls back to {encoder.dtype}: this CPU has no native {args.dtype}"
    if args.compile:
        # dynamic=True: one graph for every batch shape, instead of a recompile per (B, T)
        encoder.runner = torch.compile(encoder.runner, dynamic=True)

    # only the batch arguments a row asks for: the default row is encode(texts) as a user calls it
    asked = {"batch_size": args.batch_size, "max_batch_tokens": args.max_batch_tokens}
    asked = {name: value for name, value in asked.items() if value is not None}

    def embed(texts: list[str], batch_size: int | None = None) -> np.ndarray:
        options = asked if batch_size is None else {**asked, "batch_size": batch_size}
        return encoder.encode(texts, show_progress_bar=False, **options)

    return Loaded(embed, encoder.dtype, note)


def load_onnxruntime(args: argparse.Namespace) -> Loaded:
    """Our fp32 encoder exported to ONNX, run by ONNX Runtime; same tokenizer, batching and pooling as ours."""
    import onnxruntime as ort

    use_project()
    from minilm import SentenceEncoder
    from minilm.model.pooling import l2_normalize, mean_pool
    from minilm.text.tokenization import length_sorted_batches

    encoder = SentenceEncoder.from_pretrained(args.model)
    path = Path(tempfile.mkdtemp(prefix="minilm-onnx-")) / "encoder.onnx"
    ids = torch.randint(1000, 2000, (2, 9))
    axes = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder.model,
            (ids, torch.ones_like(ids)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
            dynamo=False,
        )
    # ONNX Runtime's own thread settings, as the peers get them: the process ends with the engine,
    # so its spinning threads can no longer slow the next one
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shutil.rmtree(path.parent)  # the session holds the graph in memory

    def embed(texts: list[str], batch_size: int | None = None) -> np.ndarray:
        encodings, _ = encoder.tokenizer.encode(texts)
        out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
        for indices in length_sorted_batches([len(e.ids) for e in encodings], batch_size or ST_BATCH_SIZE):
            batch = encoder.tokenizer.pad([encodings[i] for i in indices])
            feeds = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()}
            hidden = session.run(None, feeds)[0]  # (B, T, C)
            out[indices] = l2_normalize(mean_pool(torch.from_numpy(hidden), batch.attention_mask)).numpy()
        return out

    return Loaded(embed, "float32")


OPENVINO_PRECISIONS = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}  # OpenVINO's names -> ours


def openvino_precision(model) -> str | None:
    """The precision OpenVINO compiled the model for (its INFERENCE_PRECISION_HINT, "bf16" say), if it says.

    OpenVINO picks this itself from the CPU (bfloat16 where AVX512-BF16 or AMX exist), so the
    roofline has to ask it rather than assume float32.
    """
    with contextlib.suppress(Exception):  # optimum-intel's internals, not an API: best effort only
        return model[0].auto_model.request.get_property("INFERENCE_PRECISION_HINT").to_string()
    return None


def stsb_dev_sentences(count: int, path: Path = STSB_DEV) -> list[str]:
    """`count` sentences spread over STS-B dev: every k-th of its 3,000 (both columns, file order), so
    that every genre is in. Read here, not through minilm.base.stsb: the peers' venv has no minilm.
    Columns 5 and 6 by index, tab-separated, quotes literal (see ../shared/data/README.md)."""
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing; static int8 calibrates on STS-B dev from ../shared/data")
    sentences: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            sentences += line.rstrip("\n").split("\t")[5:7]
    if len(sentences) < count:
        raise SystemExit(f"error: {path} has {len(sentences)} sentences, {count} asked for")
    return sentences[:: len(sentences) // count][:count]


CALIBRATION_LENGTH = 384  # export_static_quantized_openvino_model pads every calibration text to this


def quantize_openvino_static(model, folder: Path, sentences: list[str]):
    """`model` (an openvino-backend SentenceTransformer) statically quantized to int8 by NNCF, calibrated on
    `sentences`; the quantized model, loaded from `folder`/openvino.

    The recipe of sentence-transformers' export_static_quantized_openvino_model (backend/quantize.py,
    5.7.0): OVQuantizer with the default OVQuantizationConfig, texts tokenized padded to 384 tokens, the
    result saved as openvino/openvino_model_qint8_quantized.xml. Its calibration set is downloaded
    (GLUE SST-2 by default); here it is a datasets.Dataset built in memory, so nothing leaves the machine.
    """
    from datasets import Dataset
    from optimum.intel import OVConfig, OVQuantizationConfig, OVQuantizer
    from sentence_transformers import SentenceTransformer

    def tokenize(batch: dict[str, list[str]]) -> dict:
        return model.tokenizer(batch["text"], padding="max_length", max_length=CALIBRATION_LENGTH, truncation=True)

    calibration = Dataset.from_dict({"text": sentences}).map(tokenize, batched=True, remove_columns=["text"])
    config = OVQuantizationConfig(num_samples=len(sentences))
    scratch = folder.parent / "static-int8"
    OVQuantizer.from_pretrained(model.transformers_model).quantize(
        calibration, save_directory=str(scratch), ov_config=OVConfig(quantization_config=config)
    )
    name = "openvino/openvino_model_qint8_quantized.xml"  # sentence-transformers' name for this export
    (folder / "openvino").mkdir(exist_ok=True)
    for suffix in (".xml", ".bin"):
        shutil.move(scratch / "openvino" / f"openvino_model{suffix}", (folder / name).with_suffix(suffix))
    return SentenceTransformer(str(folder), backend="openvino", device="cpu", model_kwargs={"file_name": name})


def load_sentence_transformers(args: argparse.Namespace) -> Loaded:
    """sentence-transformers itself: --backend torch (optionally under bf16 autocast), onnx (fp32, or
    int8 dynamically quantized with --quantize CONFIG) or openvino (as exported, or int8 statically
    quantized by NNCF with --static-int8 N, calibrated on N STS-B dev sentences).

    The onnx and openvino backends export the checkpoint into its folder, so they work on a
    temporary copy of it: the original may be read-only (it lives in site-packages).
    """
    from sentence_transformers import SentenceTransformer

    compute, note = "bfloat16" if args.autocast else "float32", ""
    if args.backend == "torch":
        model = SentenceTransformer(args.model, device="cpu")
    else:
        copy = Path(tempfile.mkdtemp(prefix="minilm-speed-peer-")) / "model"
        atexit.register(shutil.rmtree, copy.parent, ignore_errors=True)  # the exports are ~100-200 MB
        shutil.copytree(args.model, copy)
        model = SentenceTransformer(str(copy), backend=args.backend, device="cpu")
        if args.quantize:
            from sentence_transformers import export_dynamic_quantized_onnx_model

            model.save_pretrained(str(copy))  # writes onnx/model.onnx, the graph to quantize
            export_dynamic_quantized_onnx_model(model, args.quantize, str(copy))
            model_kwargs = {"file_name": f"onnx/model_qint8_{args.quantize}.onnx"}
            model = SentenceTransformer(str(copy), backend="onnx", device="cpu", model_kwargs=model_kwargs)
            compute = "int8"
        if args.static_int8:
            model = quantize_openvino_static(model, copy, stsb_dev_sentences(args.static_int8))
            compute = "int8"
            note = f"NNCF static int8; the rest of the graph in {openvino_precision(model) or 'what OpenVINO picks'}"
        elif args.backend == "openvino":
            precision = openvino_precision(model)
            if precision in OPENVINO_PRECISIONS:
                compute = OPENVINO_PRECISIONS[precision]
                note = f"OpenVINO picks its own precision: {precision} here (roofline vs that peak)"
            else:
                note = "roofline vs fp32 peak: OpenVINO picks its own precision"

    def embed(texts: list[str], batch_size: int | None = None) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast):
            vectors = model.encode(
                texts, batch_size=batch_size or ST_BATCH_SIZE, convert_to_numpy=True, normalize_embeddings=True
            )  # (N, C)
        return vectors.astype(np.float32)

    return Loaded(embed, compute, note)


LOADERS = {"ours": load_ours, "onnxruntime": load_onnxruntime, "sentence-transformers": load_sentence_transformers}


# ---------------------------------------------------------------------------- measuring


def best_time(embed: Callable[[list[str]], np.ndarray], texts: list[str], repeats: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = embed(texts)
        best = min(best, time.perf_counter() - start)
    return best, out


def library_versions() -> dict[str, str]:
    """The versions of the libraries this process may have run, for the JSON (the peers' venv pins its own)."""
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for name in ("torch", "sentence-transformers", "transformers", "onnxruntime", "openvino", "optimum-intel", "nncf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def run(args: argparse.Namespace) -> Result:
    corpora: dict[str, list[str]] = json.loads(Path(args.corpora).read_text(encoding="utf-8"))
    out = Path(args.out)
    with peak_rss_growth() as memory:
        start = time.perf_counter()
        loaded = LOADERS[args.engine](args)
        warm_start = time.perf_counter()
        loaded.embed(corpora["mixed"][:WARM_UP_TEXTS], None)  # (and torch.compile's first graphs)
        warm_end = time.perf_counter()
        seconds = {}
        for name, texts in corpora.items():
            seconds[name], vectors = best_time(lambda texts: loaded.embed(texts, None), texts, args.repeats)
            np.save(out / f"{name}.npy", np.asarray(vectors, dtype=np.float32))
        sweep = {}  # one timing per size: the sweep looks for the best batch and for cliffs, not the last 2 %
        for size in args.sweep:
            sweep[size], _ = best_time(lambda texts: loaded.embed(texts, size), corpora["short"], 1)
    return Result(
        seconds=seconds,
        sweep=sweep,
        load_s=warm_end - start,
        warmup_s=warm_end - warm_start,
        peak_rss_mb=process_peak_rss_mb(),
        rss_growth_mb=memory["mb"],
        compute=loaded.compute,
        note=loaded.note,
        versions=library_versions(),
    )


def batch_sizes(text: str) -> tuple[int, ...]:
    """--sweep's "32,64,128" -> (32, 64, 128); "" -> () (no sweep). speed.py's --sweep parses with it too."""
    sizes = tuple(int(size) for size in text.split(",") if size.strip())
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engine", choices=sorted(LOADERS))
    parser.add_argument("--model", required=True, help="the checkpoint folder")
    parser.add_argument("--corpora", required=True, help="JSON: corpus name -> list of texts (needs 'mixed')")
    parser.add_argument("--out", required=True, help="folder for result.json and <corpus>.npy")
    parser.add_argument("--repeats", type=int, default=1, help="timings per corpus, best kept")
    parser.add_argument(
        "--sweep",
        type=batch_sizes,
        default=(),
        metavar="SIZES",
        help="comma-separated batch sizes: also time the short corpus once at each (default: none)",
    )
    ours = parser.add_argument_group("ours")
    ours.add_argument("--dtype", default="float32", help="float32, bfloat16, float16, int8 or auto")
    ours.add_argument("--batch-size", type=int, default=None, help="default: none passed, encode's own")
    ours.add_argument("--max-batch-tokens", type=int, default=None, help="default: none passed, encode's own")
    ours.add_argument("--forced", action="store_true", help="run --dtype even where it would fall back")
    ours.add_argument("--compile", action="store_true", help="wrap the runner in torch.compile(dynamic=True)")
    ours.add_argument("--fuse", action="store_true", help="int8 through minilm.model.fused (compiled on the warm-up)")
    st = parser.add_argument_group("sentence-transformers")
    st.add_argument("--backend", choices=("torch", "onnx", "openvino"), default="torch")
    st.add_argument("--autocast", action="store_true", help="under torch.autocast bfloat16 (torch backend)")
    st.add_argument("--quantize", metavar="CONFIG", help="onnx int8: export_dynamic_quantized_onnx_model's config")
    st.add_argument(
        "--static-int8", type=int, metavar="N", help="openvino int8, NNCF-calibrated on N STS-B dev sentences"
    )
    args = parser.parse_args(argv)
    if args.quantize and args.backend != "onnx":
        parser.error("--quantize needs --backend onnx")
    if args.static_int8 and args.backend != "openvino":
        parser.error("--static-int8 needs --backend openvino")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = run(args)
    Path(args.out, "result.json").write_text(json.dumps(asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
