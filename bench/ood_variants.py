"""Which novelty variant could catch banking77 texts sent to the sms_spam specialist? (issue 18, item 5)

`bench/ood.py` trains the specialists; this script reuses them (from --work) and compares, on
one specialist, novelty variants that need no new model and no out-of-scope data:

- Mahalanobis on the mean-pooled hidden state of each encoder layer (0 = token embeddings,
  6 = the served pooled embedding), with class means or one class (a single Gaussian);
- the mean over all layers' pooled states (Chen et al., 2022, "Avg-Avg");
- a layer ensemble: the sum of each layer's Mahalanobis distance, standardized on validation;
- k-NN cosine distance (Sun et al., 2022) with k = 1, 10, 50, 200 on the last layer and on the layer mean.

Every threshold is the 95% quantile of validation novelty (at most 5% of validation escalates);
AUROC, FPR@95%TPR and the escalation of each group are on the in-scope test texts vs the
out-of-scope ones, as in bench/ood.py.

    OMP_NUM_THREADS=1 python bench/ood_variants.py --work /tmp/ood-bench --case sms_spam
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from common import write_json
from ood import BITEXT_UNLIKE_BANKING, read_jsonl, sample

from smallfleet.data import holdout_split, load_examples
from smallfleet.models.encoder import mean_pool
from smallfleet.novelty import NoveltyModel, auroc, fpr_at_tpr
from smallfleet.settings import datasets_dir
from smallfleet.tasks import TaskSpec, load_specialist
from smallfleet.tasks.classify.specialist import _batches
from smallfleet.tasks.classify.train import load_task_data
from smallfleet.training.settings import TrainSettings


def layers(specialist, texts: list[str]) -> np.ndarray:
    """(n, layers + 1, d): the mean-pooled hidden state of every layer of the specialist's encoder."""
    out = None
    with torch.inference_mode():
        for idx, batch in _batches(specialist.tokenizer, texts, specialist.max_length, specialist.device):
            hidden = specialist.model.encoder(**batch, output_hidden_states=True).hidden_states
            pooled = torch.stack([mean_pool(h, batch["attention_mask"]) for h in hidden], 1)
            if out is None:
                out = np.zeros((len(texts), *pooled.shape[1:]), np.float32)
            out[idx] = pooled.numpy()
    return out


def compare(specialist, spec: TaskSpec, inside: list[str], outside: list[str]) -> dict:
    data = load_task_data(spec)
    index = {lab: i for i, lab in enumerate(specialist.labels)}
    labels = np.array([index[e.label] for e in data.train])
    tr, va = layers(specialist, [e.text for e in data.train]), layers(specialist, [e.text for e in data.valid])
    ti, to = layers(specialist, inside), layers(specialist, outside)
    results = {}

    def record(key: str, s_valid, s_in, s_out) -> None:
        cut = np.quantile(s_valid, 0.95, method="higher")
        results[key] = {"auroc": auroc(s_in, s_out), "fpr95": fpr_at_tpr(s_in, s_out),
                        "escalated_in": float((s_in > cut).mean()), "escalated_ood": float((s_out > cut).mean())}  # fmt: skip

    def scores(f_tr, f_va, f_in, f_out, method="mahalanobis", lab=labels, k=10):
        model = NoveltyModel.fit(method, f_tr, lab, k=k)
        return model.score(f_va), model.score(f_in), model.score(f_out)

    per_layer = {}
    for layer in range(tr.shape[1]):
        per_layer[layer] = scores(tr[:, layer], va[:, layer], ti[:, layer], to[:, layer])
        record(f"mahalanobis layer {layer}", *per_layer[layer])
        record(f"mahalanobis layer {layer}, one class",
               *scores(tr[:, layer], va[:, layer], ti[:, layer], to[:, layer], lab=None))  # fmt: skip
    record("mahalanobis, mean of all layers", *scores(tr.mean(1), va.mean(1), ti.mean(1), to.mean(1)))
    z = [sum((per_layer[i][part] - per_layer[i][0].mean()) / per_layer[i][0].std() for i in range(1, tr.shape[1]))
         for part in range(3)]  # fmt: skip
    record("mahalanobis layer ensemble (layers 1-6, standardized sum)", *z)
    for k in (1, 10, 50, 200):
        record(f"knn k={k}, last layer", *scores(tr[:, -1], va[:, -1], ti[:, -1], to[:, -1], "knn", k=k))
        record(f"knn k={k}, mean of all layers", *scores(tr.mean(1), va.mean(1), ti.mean(1), to.mean(1), "knn", k=k))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/smallfleet-ood-bench"),
                        help="Where bench/ood.py trained the specialists.")
    parser.add_argument("--case", choices=["sms_spam", "banking77"], default="sms_spam")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--per-source", type=int, default=700)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root, n, seed = datasets_dir(), args.per_source, args.seed
    settings = TrainSettings(epochs=3, seed=seed)
    banking_test = load_examples(root / "banking77" / "test.jsonl")
    spam_rows = load_examples(root / "sms_spam" / "all.jsonl")
    if args.case == "sms_spam":
        _, spam_test, _ = holdout_split(spam_rows, 0.2, seed, label=lambda ex: ex.label)
        spec = TaskSpec(name="sms_spam", train=args.work / "sms_spam_train.jsonl", settings=settings)
        inside, outside = [e.text for e in spam_test], sample([e.text for e in banking_test], n, seed)
    else:
        spec = TaskSpec(name="banking77", train=root / "banking77" / "train.jsonl", settings=settings)
        bitext = [r["text"] for r in read_jsonl(root / "bitext_support" / "all.jsonl") if r["category"] in BITEXT_UNLIKE_BANKING]
        inside = [e.text for e in banking_test]
        outside = (sample([r["text"] for r in read_jsonl(root / "snips" / "test.jsonl")], n, seed)
                   + sample([e.text for e in spam_rows], n, seed) + sample(bitext, n, seed))  # fmt: skip
    results = compare(load_specialist(args.work / args.case), spec, inside, outside)
    print(f"{args.case}: {len(inside)} in scope, {len(outside)} out of scope; threshold: 95% quantile of validation")
    print("| variant | AUROC | FPR@95 | escalated in-scope | escalated OOD |\n|---|---|---|---|---|")
    for key, r in results.items():
        print(f"| {key} | {r['auroc']:.3f} | {r['fpr95']:.3f} | {r['escalated_in']:.1%} | {r['escalated_ood']:.1%} |")
    write_json(f"ood_variants_{args.case}", {"case": args.case, "results": results})


if __name__ == "__main__":
    main()
