"""Training-speed benchmark (issue 6, part 1): img/s of one training step and forward GFLOP/img, same data, same batch.

Configurations, run interleaved (A B C D A B C D ...), median img/s over rounds, ratios against smp:
  (a) unet_fastai default: `seg_learner` (today: fastai's DynamicUnet, ResNet34) trained through fastai's Learner
  (b) the same model in a plain PyTorch loop (Adam, cross-entropy): Learner overhead = (b) / (a) - 1
  (c) segmentation_models_pytorch `Unet("resnet34", encoder_weights=None)` in the same plain loop
  (d) classic fastai: `unet_learner(dls, resnet34, pretrained=False)` through the Learner
Data: CamVid (../shared/data/camvid) batches at size x size, made once and reused by every configuration.
Needs the bench extra: pip install segmentation-models-pytorch (not a runtime dependency).
Quality (mIoU after the same epochs) is not measured here yet.

    python bench/train.py [--size 128] [--bs 8] [--steps 8] [--rounds 3]
"""
import argparse, statistics, time, warnings
import torch
from torch import nn

def batches(size, bs, n, data='../shared/data/camvid'):
    from unet_fastai.data import camvid_dls
    dls = camvid_dls(data, size=size, bs=bs, n_train=bs * n, n_valid=bs)
    out = []
    for xb, yb in dls.train: out.append((torch.Tensor(xb).clone(), torch.Tensor(yb).long().clone()))
    return dls, out[:n]

def gflop(model, size):
    from torch.utils.flop_counter import FlopCounterMode
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc: model(torch.randn(1, 3, size, size))
    return fc.get_total_flops() / 1e9

def plain_loop(model, data, n_classes, void):
    "One pass of training steps over `data` in plain PyTorch; returns img/s"
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss(ignore_index=void if void is not None else -100)
    t = time.perf_counter()
    for xb, yb in data:
        loss = loss_fn(model(xb), yb)
        loss.backward(); opt.step(); opt.zero_grad()
    return sum(len(x) for x, _ in data) / (time.perf_counter() - t)

def learner_loop(learn, data):
    "The same steps through fastai's Learner (fit on a DataLoaders of the same batches); returns img/s"
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    items = [(x[i], y[i]) for x, y in data for i in range(len(x))]
    bs = len(data[0][0])
    learn.dls = DataLoaders(DataLoader(items, bs=bs, shuffle=False, drop_last=True), DataLoader(items[:bs], bs=bs))
    t0 = {}  # time the training batches only, not validation
    from fastai.callback.core import Callback
    class T(Callback):
        order = 100
        def before_train(self): t0['s'] = time.perf_counter()
        def after_train(self): t0['e'] = time.perf_counter()
    with learn.no_logging(): learn.fit(1, 1e-3, cbs=T())
    return len(items) / (t0['e'] - t0['s'])

def main(size=128, bs=8, steps=8, rounds=3):
    warnings.filterwarnings('ignore')
    import segmentation_models_pytorch as smp
    from fastai.vision.all import unet_learner
    from fastai.callback.progress import ProgressCallback
    from torchvision.models import resnet34
    from unet_fastai.train import seg_learner
    torch.manual_seed(0)
    dls, data = batches(size, bs, steps)
    n, void = len(dls.codes), dls.void
    a = seg_learner(dls, pretrained=False, metrics=[])
    d = unet_learner(dls, resnet34, pretrained=False, normalize=False, n_out=n, loss_func=a.loss_func)
    for l in (a, d): l.remove_cb(ProgressCallback)
    b_model = a.model  # (b) trains the same model object in a plain loop
    c_model = smp.Unet('resnet34', encoder_weights=None, classes=n)
    runs = {'a': lambda: learner_loop(a, data), 'b': lambda: plain_loop(b_model, data, n, void),
            'c': lambda: plain_loop(c_model, data, n, void), 'd': lambda: learner_loop(d, data)}
    names = {'a': 'unet_fastai default (Learner)', 'b': 'same model, plain PyTorch loop', 'c': 'smp Unet resnet34, plain loop',
             'd': 'classic fastai unet_learner (Learner)'}
    flops = {'a': gflop(a.model, size), 'b': gflop(b_model, size), 'c': gflop(c_model, size), 'd': gflop(d.model, size)}
    for k in runs: runs[k]()  # warm up
    res = {k: [] for k in runs}
    for _ in range(rounds):
        for k in runs: res[k].append(runs[k]())
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"CamVid batches {size}x{size}, bs {bs}, {steps} steps a run, {rounds} rounds interleaved, {torch.get_num_threads()} threads")
    for k in runs:
        print(f"({k}) {names[k]:38s} {flops[k]:6.2f} GFLOP/img  {med[k]:6.2f} img/s  ({med[k] / med['c']:.2f}x smp)  runs {[round(v, 2) for v in res[k]]}")
    print(f"Learner overhead on the same model: {med['b'] / med['a'] - 1:+.1%} (target <= 3%)")

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, default=128); ap.add_argument('--bs', type=int, default=8)
    ap.add_argument('--steps', type=int, default=8); ap.add_argument('--rounds', type=int, default=3)
    main(**vars(ap.parse_args()))
