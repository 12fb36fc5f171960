"""What an accuracy cell holds: the what-ifs measured, the baselines profiled, and how
``benchmarks/ab_worker.py`` measures each what-if. Shared by ``whatif_accuracy.py``, which
runs a cell, and ``predict_cell.py``, which re-predicts one (so this module imports
nothing: a re-prediction can run another checkout's ``tracekit``).
"""

#: spec -> ab_worker --variant ("" for the link what-ifs: derived from the rate)
WHAT_IFS = {
    **{f"fusion={mb}MB": f"bucket:{mb}" for mb in (1, 4, 16, 64, 100)},
    "overlap=off": "no-overlap", "dear": "dear", "dear+fusion=4MB": "dear:4",
    "bandwidth=2x": "", "bandwidth=0.5x": "",
    "fsdp=Linear": "fsdp:Linear", "fsdp=Linear+reshard=off": "fsdp-noreshard:Linear",
}
#: the bucket-size sweep: its predicted best is measured against the measured best
SWEEP = "fusion=1MB..128MB"


def sweep_gap(measured: dict[str, float], predicted_best: str) -> tuple[str, float]:
    """The measured best of the sweep's points (``measured``: spec -> measured speedup)
    and how much slower the predicted best measured than it, % (issue 11: <= 2)."""
    best = max(measured, key=measured.get)
    return best, (measured[best] / measured[predicted_best] - 1.0) * 100
#: the measurement's own check: the baseline measured against an identical copy of itself
AA = "A/A"
#: the straggler: a DDP baseline whose rank 1 gets 3x the batch (train_ddp.py --imbalance)
IMBALANCE = "1:3"
#: baseline folder per trainer run: (trainer, its extra arguments)
BASELINES = {"baseline": ("train_ddp.py", ()), "baseline-fsdp": ("train_fsdp.py", ()),
             "baseline-imbalanced": ("train_ddp.py", ("--imbalance", IMBALANCE))}
#: what-ifs predicted from another baseline: spec -> (its folder in BASELINES, ab_worker
#: --baseline, --variant): reshard=off from the FSDP2 run (samples/train_fsdp.py --unit
#: Linear), stragglers=off from the imbalanced one
FROM_OTHER_BASELINES = {
    "reshard=off": ("baseline-fsdp", "fsdp:Linear", "fsdp-noreshard:Linear"),
    "stragglers=off": ("baseline-imbalanced", f"imbalance:{IMBALANCE}", "baseline"),
}
#: the same by baseline: its folder in BASELINES -> the what-ifs predicted from it
SPECS_BY_OTHER_BASELINE = {
    folder: [s for s, (f, _, _) in FROM_OTHER_BASELINES.items() if f == folder]
    for folder in dict.fromkeys(f for f, _, _ in FROM_OTHER_BASELINES.values())}
