"""The report's Markdown: one table per experiment, every accuracy with its 95% interval."""

from __future__ import annotations

from typing import Any

from popvae.attacks.purification import SETTINGS


def _acc(ci: dict[str, Any]) -> str:
    lo, hi = ci["ci95"]
    return f"{100 * ci['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _num(value: float | str, spec: str) -> str:
    """Format a number; the report's JSON spells infinities as strings, which pass through."""
    return value if isinstance(value, str) else format(value, spec)


def _ms(s: dict[str, float]) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    line = lambda cells: "| " + " | ".join(map(str, cells)) + " |"
    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows), ""]


def reconstruction(r: dict[str, Any]) -> list[str]:
    fd = r["frechet_distance"]
    fid = r["fid"] if isinstance(r["fid"], float) else f"unavailable: {r['fid']['unavailable']}"
    hard = "-" if r.get("mse_hard") is None else f"{r['mse_hard']:.5f}"
    return ["## Reconstruction (test)", "",
            "MSE hard codes: from one-hot argmax codes (a GS-VAE's discrete code, the tau -> 0 limit); every other "
            "column scores the relaxed code softmax(logits / tau).", "", *_table(
        ["n", "MSE (per pixel)", "MSE hard codes", "SSIM", "PSNR (dB)", "MS-SSIM", fd["name"], "FID"],
        [[r["n"], f"{r['mse']:.5f}", hard, f"{r['ssim']:.4f}", _num(r["psnr"], ".2f"), f"{r['ms_ssim']:.4f}",
          f"{fd['value']:.3f}", fid]])]


def purification(r: dict[str, Any]) -> list[str]:
    s = r["setting"]
    lines = ["## Purification", "",
             f"CNN accuracy on {s['n']} test images; clean {_acc(r['clean']['cnn_alone'])}, clean purified "
             f"{_acc(r['clean']['purified'])}. Non-adaptive = the paper's setting (attack the CNN alone, then purify). "
             f"Adaptive = end to end through the purifier (purifier noise: {s['purifier_noise']}, "
             f"EOT samples: {s['eot_samples']}). "
             f"PGD: {s['pgd_steps']} steps of {s['pgd_step_size']}, random start. Fraction of images with a non-zero "
             f"end-to-end gradient: {s['adaptive_gradient_nonzero']:.3f}.", ""]
    for attack in s["attacks"]:
        lines += [f"### {attack.upper()} (L-inf)", "", *_table(
            ["eps", "CNN alone", "non-adaptive (paper)", "adaptive", "worst case"],
            [[row["eps"], *(_acc(row[k]) for k in SETTINGS)] for row in r[attack]])]
    lines += ["### Worst case over every attack at each eps", "",
              *_table(["eps", "accuracy"], [[row["eps"], _acc(row["accuracy"])] for row in r["worst_case_all"]])]
    return lines


def latent(name: str, r: dict[str, Any]) -> list[str]:
    s = r["setting"]
    keys = [k for k in r["rows"][0] if k.startswith("ms_ssim_")]
    header = ["L2 budget", *(f"MS-SSIM {k.removeprefix('ms_ssim_').replace('_', ' ')}" for k in keys)]
    has_mlp = "latent_mlp_accuracy_worst_case" in r["rows"][0]
    header += ["latent MLP accuracy (worst over trials)", "per trial", "target hit rate per trial"] if has_mlp else []
    rows = [[row["budget_l2"], *(_ms(row[k]) for k in keys),
             *([_acc(row["latent_mlp_accuracy_worst_case"]), f"{100 * row['latent_mlp_accuracy_per_trial']:.1f}%",
                f"{100 * row['latent_mlp_target_hit_rate_per_trial']:.1f}%"] if has_mlp else [])] for row in r["rows"]]
    intro = f"{s['n_images']} test images x {s['trials']} trials, PGD {s['pgd_steps']} steps; mean ± std."
    if "latent_mlp_clean_accuracy" in r:
        intro += f" Latent MLP clean accuracy {_acc(r['latent_mlp_clean_accuracy'])}."
    return [f"## {name}", "", intro, "", *_table(header, rows)]


def latent_pgd(r: dict[str, Any]) -> list[str]:
    lines = ["## Latent PGD", "", f"{r['setting']['n']} test images; distortion of D(z_adv) against D(E(x)); "
             f"AADDC limit SSIM {r['setting']['ssim_limit']}."
             + ("" if r["lpips"] is None else f" LPIPS unavailable: {r['lpips']['unavailable']}."), ""]
    for mode in ("untargeted", "targeted_black"):
        c = r[mode]
        has_lpips = "lpips" in c["rows"][0]
        header = ["eps", "SSIM", "PSNR (dB)", "MSE to black", *(["LPIPS"] if has_lpips else [])]
        rows = [[row["eps"], f"{row['ssim']:.4f}", _num(row["psnr"], ".2f"), f"{row['mse_to_black']:.4f}",
                 *([f"{row['lpips']:.4f}"] if has_lpips else [])] for row in c["rows"]]
        aaddc = f"AADDC (SSIM): {c['aaddc_ssim']:.4f}" + (f", AADDC (LPIPS): {c['aaddc_lpips']:.4f}" if has_lpips else "")
        lines += [f"### {mode.replace('_', ' ')}", "", aaddc, "", *_table(header, rows)]
    return lines


def patches(r: dict[str, Any]) -> list[str]:
    s = r["setting"]
    return ["## Patch anomaly detection", "",
            f"Threshold chosen on {s['n_val']} validation images only; tested on {s['n_test']} test images, half patched.", "",
            *_table(["shape", "size (px)", "threshold", "val accuracy", "test accuracy", "test ROC-AUC"],
                    [[row["shape"], row["size"], f"{row['threshold']:.5f}", _acc(row["val"]["accuracy"]),
                      _acc(row["test"]["accuracy"]), f"{row['test']['roc_auc']:.3f}"] for row in r["rows"]])]


def unseen(r: dict[str, Any]) -> list[str]:
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)
    rows = [[group, r[group]["n"], fmt(r[group]["mse"], ".5f"), fmt(r[group]["ssim"], ".4f")] for group in ("seen", "unseen")]
    note = f"Held-out classes: {r['held_out']}." if r["held_out"] else "The model was trained on every class: no unseen group."
    return ["## Unseen classes", "", note, "", *_table(["classes", "n", "MSE (per pixel)", "SSIM"], rows)]
