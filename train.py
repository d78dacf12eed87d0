"""Train with entropy-selected pseudo-labels.

    accelerate launch train.py                                # default experiment, every device
    accelerate launch train.py --config configs/mnist.yaml --train.epochs 5
    python train.py --help                                    # every option with its default

What happens (plabel/trainer/run.py): round 0 trains on the labeled set alone (the supervised
baseline); each later round scores the unlabeled pool (plabel/trainer/scoring_pass.py),
selects the lowest-entropy k% of the whole pool without gathering it
(plabel/distributed/sharded_selection.py, exact against the reference in
plabel/method/selection.py), and trains on labeled + pseudo-labeled data with
loss = CE(labeled) + alpha * CE(pseudo) (plabel/trainer/loop.py, plabel/method/loss.py).
Process count comes from the launcher (launch/), never from the config.
"""

from plabel.commands.train import train_main

if __name__ == "__main__":
    raise SystemExit(train_main(watch_launcher=True))
