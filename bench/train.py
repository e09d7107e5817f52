"""Training-speed benchmark: img/s of training steps and forward GFLOP/img, same data, same batch; then
validation mIoU after the same epochs, so that speed is never bought with quality.

Speed, configurations run interleaved (a b c d e a b c d e ...), median img/s over rounds, ratios against smp (c):
  (a) unet_fastai default: `seg_learner` (ResNet34 + lean decoder, channels_last) trained through fastai's Learner
  (b) the same model in a plain PyTorch loop (Adam, cross-entropy): Learner overhead = (b) / (a) - 1
  (c) segmentation_models_pytorch `Unet("resnet34", encoder_weights=None)` in the same plain loop
  (c') the same smp model in channels_last (the memory format the default trains in)
  (d) classic fastai: `seg_learner(decoder='dynamic')` = `unet_learner(dls, resnet34)`'s DynamicUnet, through the Learner
Data: CamVid (../shared/data/camvid) batches at size x size, made once and reused by every configuration.

Quality: (a), (c) and (d) trained from scratch with the same recipe (fastai `fit_one_cycle`, same lr, seed, epochs,
augmentation) on CamVid at --qsize, then accuracy without void and mIoU on the 101 validation frames, and the
end-to-end training img/s of that run (data loading and augmentation included). --epochs 0 skips it.
Noise controls (--configs): (A) the default without channels_last, (C) smp in channels_last, (i) the default started
from smp's initial weights (same architecture, copied tensor by tensor); --same-batches reseeds after building each
model, so that every configuration of a seed sees the same batches and augmentation.

Needs the bench extra: pip install -e ".[bench]" (segmentation-models-pytorch; not a runtime dependency).

    python bench/train.py [--size 128] [--bs 8] [--steps 8] [--rounds 5] [--epochs 4] [--qsize 96x128] [--lr 2e-3]
                          [--seeds 0] [--configs acd] [--no-speed] [--same-batches]
"""
import argparse, random, statistics, time, warnings
import torch
from torch import nn

CAMVID = '../shared/data/camvid'

def batches(size, bs, n):
    from unet_fastai.data.blocks import camvid_dls
    dls = camvid_dls(CAMVID, size=size, bs=bs, n_train=bs * n, n_valid=bs)
    out = []
    for xb, yb in dls.train: out.append((torch.Tensor(xb).clone(), torch.Tensor(yb).long().clone()))
    return dls, out[:n]

def gflop(model, size):
    from torch.utils.flop_counter import FlopCounterMode
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc: model(torch.randn(1, 3, size, size))
    return fc.get_total_flops() / 1e9

def plain_loop(model, data, void, channels_last=False):
    "One pass of training steps over `data` in plain PyTorch; returns img/s"
    model.train().to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
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
    from fastai.callback.core import Callback
    items = [(x[i], y[i]) for x, y in data for i in range(len(x))]
    bs = len(data[0][0])
    learn.dls = DataLoaders(DataLoader(items, bs=bs, shuffle=False, drop_last=True), DataLoader(items[:bs], bs=bs))
    t0 = {}  # time the training batches only, not validation
    class T(Callback):
        order = 100
        def before_train(self): t0['s'] = time.perf_counter()
        def after_train(self): t0['e'] = time.perf_counter()
    with learn.no_logging(): learn.fit(1, 1e-3, cbs=T())
    return len(items) / (t0['e'] - t0['s'])

def speed(size, bs, steps, rounds):
    import segmentation_models_pytorch as smp
    from fastai.callback.progress import ProgressCallback
    from unet_fastai.train.learner import seg_learner
    torch.manual_seed(0)
    dls, data = batches(size, bs, steps)
    n, void = len(dls.codes), dls.void
    a = seg_learner(dls, pretrained=False, metrics=[])
    d = seg_learner(dls, pretrained=False, metrics=[], decoder='dynamic', channels_last=False)
    for l in (a, d): l.remove_cb(ProgressCallback)
    b_model = a.model  # (b) trains the same model object in a plain loop, in the same memory format
    c_model = smp.Unet('resnet34', encoder_weights=None, classes=n)
    runs = {'a': lambda: learner_loop(a, data), 'b': lambda: plain_loop(b_model, data, void, channels_last=True),
            'c': lambda: plain_loop(c_model, data, void), "c'": lambda: plain_loop(c_model, data, void, channels_last=True),
            'd': lambda: learner_loop(d, data)}
    names = {'a': 'unet_fastai default (Learner)', 'b': 'same model, plain PyTorch loop', 'c': 'smp Unet resnet34, plain loop',
             "c'": 'smp Unet, channels_last, plain loop', 'd': 'fastai DynamicUnet (Learner)'}
    flops = {'a': gflop(a.model, size), 'b': gflop(b_model, size), 'c': gflop(c_model, size), "c'": gflop(c_model, size),
             'd': gflop(d.model, size)}
    for k in runs: runs[k]()  # warm up
    res = {k: [] for k in runs}
    for _ in range(rounds):
        for k in runs: res[k].append(runs[k]())
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"Speed: CamVid batches {size}x{size}, bs {bs}, {steps} steps a run, {rounds} rounds interleaved, "
          f"{torch.get_num_threads()} threads, fp32")
    for k in runs:
        print(f"({k:2s}) {names[k]:36s} {flops[k]:6.2f} GFLOP/img  {med[k]:6.2f} img/s  ({med[k] / med['c']:.2f}x smp)  "
              f"runs {[round(v, 2) for v in res[k]]}")
    print(f"Learner overhead on the same model: {med['b'] / med['a'] - 1:+.1%} (target <= 3%); "
          f"default vs smp: {med['a'] / med['c']:.2f}x (target >= 1.0x)")
    return med

def copy_weights(src:nn.Module, dst:nn.Module):
    "Load `src`'s tensors into `dst` in order (two models of the same architecture with different module names)"
    a = [v for k, v in src.state_dict().items() if not k.endswith('num_batches_tracked')]
    b = [k for k, v in dst.state_dict().items() if not k.endswith('num_batches_tracked')]
    shapes = [dst.state_dict()[k].shape for k in b]
    assert len(a) == len(b) and all(t.shape == sh for t, sh in zip(a, shapes)), "not the same architecture"
    dst.load_state_dict(dict(zip(b, a)), strict=False)

def quality(qsize, bs, epochs, lr, seeds=(0,), configs='acd', same_batches=False):
    import segmentation_models_pytorch as smp
    from fastai.learner import Learner
    from fastai.callback.channelslast import ChannelsLast
    from fastai.torch_core import set_seed
    from unet_fastai.data.blocks import camvid_dls
    from unet_fastai.train.learner import seg_learner, default_metrics
    from unet_fastai.train.loop import evaluate
    dls = camvid_dls(CAMVID, size=qsize, bs=bs)
    def smp_learner(channels_last=False):
        learn = Learner(dls, smp.Unet('resnet34', encoder_weights=None, classes=len(dls.codes)),
                        loss_func=seg_learner(dls, pretrained=False).loss_func, metrics=default_metrics(dls))
        return learn.add_cb(ChannelsLast()) if channels_last else learn
    def from_smp_init():
        ref = smp.Unet('resnet34', encoder_weights=None, classes=len(dls.codes))
        learn = seg_learner(dls, pretrained=False)
        copy_weights(ref, learn.model)
        return learn
    makers = {'a': lambda: seg_learner(dls, pretrained=False), 'c': smp_learner,
              'd': lambda: seg_learner(dls, pretrained=False, decoder='dynamic', channels_last=False),
              'A': lambda: seg_learner(dls, pretrained=False, channels_last=False),
              'C': lambda: smp_learner(channels_last=True), 'i': from_smp_init}
    names = {'a': 'unet_fastai default', 'c': 'smp Unet resnet34', 'd': 'fastai DynamicUnet', 'A': 'default, not channels_last',
             'C': 'smp, channels_last', 'i': "default from smp's init"}
    print(f"\nQuality: CamVid {qsize[0]}x{qsize[1]}, {len(dls.train_ds)} train / {len(dls.valid_ds)} valid, from scratch, "
          f"fit_one_cycle {epochs} epochs, lr {lr}, bs {bs}, seeds {list(seeds)}"
          f"{', the same batches for every configuration' if same_batches else ''}", flush=True)
    out = {}
    for seed in seeds:
        for k in configs:
            set_seed(seed)
            learn = makers[k]()
            if same_batches:  # the global RNGs (augmentation) and the loaders' own (shuffling), which runs advance
                set_seed(seed + 100)
                for dl in dls.loaders: dl.rng = random.Random(seed + 100)
            with learn.no_bar(), learn.no_logging():
                t = time.perf_counter(); learn.fit_one_cycle(epochs, lr); dt = time.perf_counter() - t
            r = evaluate(learn)
            out.setdefault(k, []).append(r['mIoU'])
            print(f"({k}) {names[k]:28s} seed {seed}  acc_novoid {r['accuracy']:.3f}  mIoU {r['mIoU']:.3f}  "
                  f"{dt:6.0f} s ({epochs * len(dls.train_ds) / dt:.2f} img/s end to end)", flush=True)
    if len(seeds) > 1:
        for k, v in out.items(): print(f"({k}) {names[k]:28s} mean mIoU over {len(v)} seeds {statistics.mean(v):.3f}")
    if 'a' in out and 'c' in out:
        print(f"default vs smp mIoU: {statistics.mean(out['a']) - statistics.mean(out['c']):+.3f} (target >= 0)")

def main(size=128, bs=8, steps=8, rounds=5, epochs=4, qsize='96x128', lr=2e-3, seeds='0', configs='acd', no_speed=False,
         same_batches=False):
    warnings.filterwarnings('ignore')
    if not no_speed: speed(size, bs, steps, rounds)
    if epochs: quality(tuple(int(v) for v in qsize.split('x')), bs, epochs, lr, [int(s) for s in seeds.split(',')], configs,
                       same_batches)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, default=128); ap.add_argument('--bs', type=int, default=8)
    ap.add_argument('--steps', type=int, default=8); ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--epochs', type=int, default=4); ap.add_argument('--qsize', default='96x128')
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--seeds', default='0', help='quality runs, e.g. 0,1,2 (mean reported)')
    ap.add_argument('--configs', default='acd', help="quality configurations, e.g. ac to skip the slow DynamicUnet; "
                    "noise controls A, C, i")
    ap.add_argument('--no-speed', action='store_true', help='quality only')
    ap.add_argument('--same-batches', action='store_true', help='every configuration of a seed sees the same batches')
    main(**vars(ap.parse_args()))
