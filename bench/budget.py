"""A time budget planned (`--budget`) against the fixed recipe cut by the clock, on every reference data set.

For each data set of `bench/recipes.py` (the same data, folds, from-scratch recipe, lr 2e-3 and scoring) and each
budget, runs of the same fold and seed (`--arms`; the table gives the last minus the first):

- `fixed`: the data set's recipe epochs (as `bench/recipes.py` trains them), stopped by the clock when the budget is
  spent, as Lightning's `max_time` stops a run (its one-cycle schedule then never anneals; it may also end early,
  having used less than the budget);
- `plan`: `train_segmentation(budget=...)`: a probe of this machine, then as many epochs as fit, the one-cycle over them;
- `each`: the same plan with a checkpoint after every epoch (`checkpoint_every=1`), as before the plan spaced them where
  they cost more than a twentieth of the budget: `--arms each plan` measures that rule.

Each row gives the figures of the kept (best-epoch) model, the epochs run and the wall time of the training call
(the loaders are built before it, for both). The plan's run includes its probe, calibration and export within the
budget; the fixed run's clock stops only its epochs (its calibration and export come after), so it has a few seconds
more. `plan.json`'s prediction is printed beside the wall time: the overshoot is wall ÷ budget − 1.

    python bench/budget.py [--budgets 1m 2m] [--use 3] [--only camvid,roads] [--seed 0] [--picture budget.png]
    python bench/budget.py --arms each plan   # the plan's checkpoint rule against a checkpoint after every epoch

With the defaults (2 minutes, fold 0 of 3, 7 data sets, 2 runs each) it takes about 35 minutes on this 2-core CPU.
"""
import argparse, contextlib, json, math, statistics, tempfile, time, warnings
from pathlib import Path
from recipes import data_sets, run_fold, mean_sd

def deadline(seconds):
    "A fastai callback that ends the fit once `seconds` have passed since the first fit began (Lightning's `max_time`)"
    from fastai.callback.core import Callback, CancelFitException
    class Deadline(Callback):
        order, end = 99, None
        def before_fit(self): self.end = self.end or time.monotonic() + seconds
        def after_batch(self):
            if self.training and time.monotonic() > self.end: raise CancelFitException
    return Deadline()

ARMS = {  # name: the options of its run, given the data set's spec and the budget in seconds
    'fixed': lambda spec, sec: dict(epochs=spec.epochs, cbs=[deadline(sec)]),  # the recipe's epochs cut by the clock
    'plan': lambda spec, sec: dict(epochs=None, budget=sec),  # train_segmentation(budget=...)
    'each': lambda spec, sec: dict(epochs=None, budget=sec, checkpoint_every=1),  # the plan with a checkpoint after every epoch
}

def picture(rows, arms, path):
    "Quality against budget, a panel per data set (its first figure), a line per arm"
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(r[0] for r in rows))
    cols = min(4, len(names))
    fig, axs = plt.subplots(math.ceil(len(names) / cols), cols, figsize=(3.2 * cols, 2.9 * math.ceil(len(names) / cols)), squeeze=False)
    for ax in axs.flat[len(names):]: ax.axis('off')
    for ax, name in zip(axs.flat, names):
        mine = [r for r in rows if r[0] == name]
        k = 'mIoU' if 'mIoU' in mine[0][3] else next(k for k in mine[0][3] if k != 'zero')
        for arm in arms:
            done = [(r[2] / 60, statistics.mean(x[k] for x in r[4][arm] if x)) for r in mine if any(r[4][arm])]  # budgets that fitted
            ax.plot(*zip(*done) if done else ([], []), 'o--' if arm == 'fixed' else 'o-', label=arm)
        ax.set_title(f"{name}", fontsize=9); ax.set_xlabel('budget (min)'); ax.set_ylabel(k, fontsize=8)
    axs.flat[0].legend(fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=90)
    print(f"picture: {path}")

def table(rows, arms):
    "Mean ± sd of each figure for each arm, the last arm − the first, epochs and wall ÷ budget"
    first, last = arms[0], arms[-1]
    print(f"\n| data set | budget | figure | {' | '.join(arms)} | {last} − {first} | epochs {' / '.join(arms)} | wall ÷ budget {' / '.join(arms)} |")
    print('| --- ' * (6 + len(arms)) + '|')
    diffs = []
    for name, b, sec, keys, res in rows:
        for k in keys:
            if k == 'zero': continue
            both = [(p[k], q[k]) for p, q in zip(res[last], res[first]) if p and q]  # None: the budget did not fit that run
            d = statistics.mean(p - q for p, q in both) if both else None
            if both: diffs.append(d)
            figs = ' | '.join('{:.3f} ± {:.3f}'.format(*mean_sd(v)) if (v := [r[k] for r in res[a] if r]) else 'too small' for a in arms)
            ep = ' / '.join('/'.join(str(r['epochs']) if r else '—' for r in res[a]) for a in arms)
            wall = ' / '.join('/'.join(f"{r['wall'] / sec:.2f}" if r else '—' for r in res[a]) for a in arms)
            print(f"| {name} | {b} | {k} | {figs} | {'—' if d is None else f'{d:+.3f}'} | {ep} | {wall} |")
    if diffs: print(f"\nmean {last} − {first} over {len(diffs)} figures: {statistics.mean(diffs):+.3f}")

def main(budgets=('2m',), folds=3, use=1, seed=0, only=None, work=None, picture_to=None, arms=('fixed', 'plan')):
    warnings.filterwarnings('ignore')
    import matplotlib; matplotlib.use('Agg')
    import torch
    from unet_fastai.train.plan import parse_budget
    from unet_fastai.core import BadInputError
    t0 = time.perf_counter()
    print(f"budget: {' vs '.join(arms)}; budgets {', '.join(budgets)}; fold(s) {list(range(use))} of {folds}; "
          f"from scratch, lr 2e-3, seed {seed}+fold, {torch.get_num_threads()} threads", flush=True)
    rows = []
    with (contextlib.nullcontext(work) if work else tempfile.TemporaryDirectory(prefix='bench_budget_')) as work:
        for spec, groups, parts in data_sets(work, only, folds):
            for b in budgets:
                sec, res = parse_budget(b), {a: [] for a in arms}
                for f, valid in enumerate(parts[:use]):
                    for arm in arms:
                        with tempfile.TemporaryDirectory(dir=work) as out:
                            opts = ARMS[arm](spec, sec)
                            try: r = run_fold(spec, {}, valid, seed + f, out, opts.pop('epochs'), **opts)
                            except BadInputError as e:  # the plan says the budget is too small for one epoch on this machine
                                print(f"  {spec.name} {b} fold {f} [{arm}] {e}", flush=True); res[arm].append(None); continue
                            plan = Path(out)/'plan.json'
                            if plan.exists(): r['predicted'], r['every'] = (json.loads(plan.read_text())[k] for k in ('predicted_s', 'checkpoint_every'))
                        res[arm].append(r)
                        print(f"  {spec.name} {b} fold {f} [{arm}] {r['epochs']} epochs, {r['wall']:.0f} s"
                              + (f" (planned {r['predicted']:.0f} s, a checkpoint every {r['every']})" if 'predicted' in r else f" (recipe {spec.epochs})") + ': '
                              + '  '.join(f"{k} {r[k]:.3f}" for k in spec.keys if k != 'zero'), flush=True)
                rows.append((spec.name, b, sec, spec.keys, res))
    table(rows, arms)
    if picture_to and rows: picture(rows, arms, picture_to)
    print(f"all: {(time.perf_counter() - t0) / 60:.1f} min")

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--budgets', nargs='+', default=['2m'])
    ap.add_argument('--folds', type=int, default=3, help='folds the data sets are split into (as bench/recipes.py)')
    ap.add_argument('--use', type=int, default=1, help='how many of them are validated (1: fold 0, a screen; 3: mean ± sd)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--only', type=lambda s: s.split(','), default=None)
    ap.add_argument('--work', default=None)
    ap.add_argument('--picture', dest='picture_to', default=None, help='quality against budget, a panel per data set (PNG)')
    ap.add_argument('--arms', nargs='+', default=['fixed', 'plan'], choices=list(ARMS),
                    help='runs compared (the last against the first): fixed (the recipe cut by the clock), plan, each (the plan, a checkpoint every epoch)')
    main(**vars(ap.parse_args()))
