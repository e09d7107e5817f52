"Faults a user meets: a full disk and a read-only folder, on small tmpfs file systems (root mounts them; skipped, saying why, elsewhere)"
import os, shutil, subprocess
from contextlib import contextmanager
import numpy as np, pytest
from PIL import Image
from conftest import command
from unet_fastai.data.synthetic import write_scenes
from unet_fastai.data.prepare import prepare

@contextmanager
def tmpfs(path, size:str, ro=False):
    "A tmpfs of `size` at `path` (read-only with `ro`), unmounted afterwards; the test is skipped where mounting is not allowed"
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'not root'}): the full-disk tests need one")
    try:
        if ro: subprocess.run(['mount', '-o', 'remount,ro', str(path)], check=True)
        yield path
    finally: subprocess.run(['umount', '-l', str(path)])

def run(*args): return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=900)

def errors(r): return [l for l in r.stderr.splitlines() if l.startswith('error: ')]

def test_prepare_into_a_full_disk(tmp_path):
    write_scenes(tmp_path/'src', n=4, size=600)
    with tmpfs(tmp_path/'small', '3m') as dst:
        r = run(command('unet_fastai_prepare'), tmp_path/'src', dst, '--workers', 1)
        assert r.returncode == 1 and len(errors(r)) == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
        assert errors(r)[0].startswith(f'error: no space left on device writing {dst}/') and 'a rerun continues' in errors(r)[0], errors(r)
        assert not [p for p in dst.rglob('.*.tmp')]  # no half file
        for p in dst.rglob('*.png'): Image.open(p).load()  # every file there is whole

def test_read_only_folder(tmp_path):
    write_scenes(tmp_path/'src', n=1, size=300)
    with tmpfs(tmp_path/'ro', '1m', ro=True) as dst:
        r = run(command('unet_fastai_prepare'), tmp_path/'src', dst/'out')
        assert r.returncode == 1 and r.stderr.strip().splitlines() == [
            f"error: cannot write {dst/'out'}: the file system is read-only; choose a folder you can write to, or fix its permissions"], r.stderr[-2000:]

def test_training_out_of_space_keeps_the_last_checkpoint(tmp_path):
    from unet_fastai.train.checkpoint import read_checkpoint
    write_scenes(tmp_path/'scenes', n=3, size=384, seed=2)
    prepare(tmp_path/'scenes', tmp_path/'prep', size=384, tile=128, workers=0, progress=False)
    args = (command('unet_fastai_train'), 'roads', tmp_path/'prep', '--bs', 2, '--freeze-epochs', 0, '--lr', 2e-3,
            '--pretrained', 'false', '--train-seed', 0, '--epochs', 3)
    r = run(*args, '--epochs', 1, '--out', tmp_path/'sizes')
    assert r.returncode == 0, r.stderr[-2000:]
    ck, best = ((tmp_path/'sizes'/f).stat().st_size for f in ('checkpoint.pth', 'best.pth'))
    pictures = sum(p.stat().st_size for p in (tmp_path/'sizes').glob('*.png'))
    room = ck + best + pictures + ck // 2 + (1 << 20)  # epoch 1 fits; epoch 2's checkpoint (a second copy, then a rename) does not
    with tmpfs(tmp_path/'full', f'{room // 1024}k') as out:
        r = run(*args, '--out', out)
        assert r.returncode == 1 and len(errors(r)) == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
        assert errors(r)[0].startswith(f'error: no space left on device writing {out}/'), errors(r)
        assert read_checkpoint(out/'checkpoint.pth')['epoch'] == 1 and not list(out.glob('.*.tmp')) and not (out/'model.pkl').exists()
        shutil.copytree(out, tmp_path/'moved')  # the user frees space (here: moves the run elsewhere)
    r = run(*args, '--out', tmp_path/'moved', '--resume')
    assert r.returncode == 0 and 'after epoch 1' in r.stdout, r.stderr[-2000:]
    assert (tmp_path/'moved'/'model.pkl').exists()
