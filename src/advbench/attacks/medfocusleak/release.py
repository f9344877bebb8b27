"""The ``medfocusleak`` release config: one row per attacked image (MedFocusLeak or the
M-Attack baseline), with the exact pixels it started from, the protected diagnostic mask, the
target findings, fidelity metrics and each victim's answer.

Its summary tables are computed with DuckDB over the written rows, so the card and the build
report the rates of what was actually released: per victim, modality and method the MTR,
AvgSim and both forms of MAS (the paper's tables use the product, its text the geometric mean),
and per method the fidelity, where the largest change inside the mask must be 0 for
``medfocusleak`` rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from advbench.metrics.rates import mas_geometric, mas_product
from advbench.records import Sample
from advbench.release.configs import RELEASE_CONFIGS, SummaryTable
from advbench.release.derived import DerivedConfig

if TYPE_CHECKING:
    import duckdb

METHODS = ("medfocusleak", "m_attack")

# MAS both ways: the paper's tables use the product, its text the geometric mean
VICTIM_COLUMNS = ["victim", "modality", "method", "n", "judged", "MTR", "clean MTR", "AvgSim",
                  "MAS (MTR × AvgSim)", "MAS (geometric mean)"]
CHECK_COLUMNS = ["method", "rows", "max L∞ (/255)", "rows over ε", "max mask change (/255)",
                 "rows with the mask changed"]
FIDELITY_COLUMNS = ["method", "n", "mean L∞ (/255)", "mean L2", "mean SSIM", "mean PSNR (dB)",
                    "mean AvgSim", "max mask change (/255)"]


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


@RELEASE_CONFIGS.register("medfocusleak")
class MedFocusLeakRelease(DerivedConfig):
    default_name = "medfocusleak"
    description = ("MedFocusLeak adversarial images: a bounded perturbation confined to the "
                   "background, aimed at a clinically plausible wrong finding (and the "
                   "unmasked M-Attack baseline), with each victim's answer")

    def text_features(self) -> dict[str, Any]:
        from datasets import Value

        return {"true_findings": Value("string"), "target_findings": Value("string")}

    def own_features(self) -> dict[str, Any]:
        from datasets import Image, List, Value

        f32 = Value("float32")
        return {
            "split": Value("string"),
            "method": Value("string"),
            "original_image": Image(),
            "mask_source": Value("string"),
            "edits": List({"attribute": Value("string"), "from": Value("string"),
                           "to": Value("string")}),
            "epsilon": f32,
            "steps": Value("int32"),
            "surrogates": List(Value("string")),
            "linf": f32,
            "l2": f32,
            "ssim": f32,
            "psnr": f32,
            "avg_sim": f32,
            "mask_change": f32,
            "victims": List({"name": Value("string"), "answer": Value("string"),
                             "misdirected": Value("bool"), "error": Value("string"),
                             "clean_answer": Value("string"),
                             "clean_misdirected": Value("bool")}),
            "seed": Value("int64"),
        }

    def row(self, record: Sample) -> dict[str, Any]:
        from advbench.images import encode_png

        out = super().row(record)
        original = out.get("original_image")
        if original is not None and not isinstance(original, dict):
            out["original_image"] = {"bytes": encode_png(original),
                                     "path": f"{record.id}-original.png"}
        return out

    def card_template(self) -> str:
        """Its own card section when the checkout has one, else just the tables."""
        from advbench.release.card import template_text

        own = super().card_template()
        try:
            template_text(own)
        except (FileNotFoundError, ModuleNotFoundError, OSError):
            return "configs/_tables.md.j2"
        return own

    def summary(self, con: duckdb.DuckDBPyConnection, rows: str) -> list[SummaryTable]:
        # per modality, then over all modalities ("all": every row counts once)
        per_victim = con.sql(f"""
            SELECT v.name, coalesce(modality, 'all'), method, count(*), count(v.misdirected),
                   avg(CASE WHEN v.misdirected THEN 1.0 WHEN v.misdirected IS NULL THEN NULL
                       ELSE 0.0 END),
                   avg(CASE WHEN v.clean_misdirected THEN 1.0
                       WHEN v.clean_misdirected IS NULL THEN NULL ELSE 0.0 END),
                   avg(avg_sim)
            FROM (SELECT modality, method, avg_sim, unnest(victims) AS v FROM {rows})
            GROUP BY GROUPING SETS ((v.name, modality, method), (v.name, method))
            ORDER BY 1, grouping(modality), 2, 3""").fetchall()
        victims = []
        for name, modality, method, n, judged, rate, clean, sim in per_victim:
            victims.append([name, modality, method, n, judged, _round(rate), _round(clean),
                            _round(sim),
                            _round(mas_product(rate, sim)), _round(mas_geometric(rate, sim))])
        fidelity = con.sql(f"""
            SELECT method, count(*), avg(linf), avg(l2), avg(ssim),
                   avg(CASE WHEN isinf(psnr) THEN NULL ELSE psnr END), avg(avg_sim),
                   max(mask_change)
            FROM {rows} GROUP BY 1 ORDER BY 1""").fetchall()
        return [
            SummaryTable("misdirection per victim, modality and method", VICTIM_COLUMNS,
                         victims),
            SummaryTable("bound and mask, re-measured on the released PNGs", CHECK_COLUMNS,
                         decoded_check(con, rows)),
            SummaryTable("fidelity per method (vs the original pixels)", FIDELITY_COLUMNS,
                         [[m, n, *(_round(x, 3) for x in rest)]
                          for m, n, *rest in fidelity]),
        ]


def decoded_check(con: duckdb.DuckDBPyConnection, rows: str) -> list[list[Any]]:
    """Per method, the bound and the mask measured again on the PNGs as written (``image``
    against ``original_image``; ``mask`` 255 = diagnostic): what a user who loads the release
    gets, not what the attack believed it made. A ``medfocusleak`` row must show no change
    inside its mask and none over ε."""
    import numpy as np

    from advbench.images import decode_pixels

    result = con.execute(f"""SELECT method, epsilon, image.bytes,
                             original_image.bytes, mask.bytes FROM {rows}""")
    stats: dict[str, list[Any]] = {}
    while batch := result.fetchmany(64):
        for method, eps, adv, orig, mask in batch:
            a = np.asarray(decode_pixels(adv)).astype(np.int16)
            b = np.asarray(decode_pixels(orig)).astype(np.int16)
            diff = np.abs(a - b)
            diff = diff.max(axis=2) if diff.ndim == 3 else diff
            inside = (np.asarray(decode_pixels(mask)) == 255) if mask is not None else None
            change = int(diff[inside].max()) if inside is not None and inside.any() else 0
            linf = int(diff.max()) if diff.size else 0
            row = stats.setdefault(method, [method, 0, 0, 0, 0, 0])
            row[1] += 1
            row[2] = max(row[2], linf)
            row[3] += int(linf > int(np.floor(eps * 255 + 1e-6)))
            row[4] = max(row[4], change)
            row[5] += int(change > 0)
    return [stats[m] for m in sorted(stats)]
