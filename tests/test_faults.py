"Faults a user meets: a full disk and a read-only folder, on small tmpfs file systems (root mounts them; skipped, saying why, elsewhere)"
import json, os, re, shutil, subprocess
from pathlib import Path
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
    room = written(tmp_path/'sizes') - (tmp_path/'sizes'/'model.pkl').stat().st_size // 2  # all but the exported model fits
    with tmpfs(tmp_path/'no_export', f'{room // 1024}k') as out:
        r = run(*args, '--epochs', 1, '--out', out)
        assert r.returncode == 1 and len(errors(r)) == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
        assert errors(r)[0].startswith(f'error: no space left on device writing {out}/model.pkl: '), errors(r)
        assert read_checkpoint(out/'checkpoint.pth')['epoch'] == 1 and not list(out.glob('.*.tmp')) and not (out/'model.pkl').exists()

def geo_scenes(folder, n:int, size:int, seed:int=0)->Path:
    "`n` generated RGB scenes as GeoTIFFs side by side in EPSG:26986"
    import rasterio
    from rasterio.transform import from_origin
    from unet_fastai.data.synthetic import make_scene
    folder.mkdir(parents=True)
    for i in range(n):
        img, _ = make_scene(seed + i, size=size)
        with rasterio.open(folder/f's{i}.tif', 'w', driver='GTiff', width=size, height=size, count=3, dtype='uint8', crs='EPSG:26986',
                           transform=from_origin(230000 + size * i, 900000, 1, 1)) as o: o.write(np.moveaxis(img, -1, 0))
    return folder

def written(folder)->int: return sum(p.stat().st_size for p in Path(folder).rglob('*') if p.is_file())

def test_prepare_into_a_full_disk_at_each_stage(tmp_path):
    "Room for less and less of the work: whichever write fills the disk (libtiff's rows, libvips' PNG, Pillow's tiles) says one line and leaves every file whole"
    write_scenes(tmp_path/'src', n=2, size=900)
    args = (command('unet_fastai_prepare'), tmp_path/'src')
    assert run(*args, tmp_path/'ref', '--workers', 1, '--size', 0).returncode == 0  # full size: the tiles are cut while the PNG is written
    total, stages = written(tmp_path/'ref'), set()
    for frac in (0.1, 0.4, 0.7, 1.0):  # measured: a tile, the scene's mask PNG, its image PNG, the second scene
        with tmpfs(tmp_path/f'at{frac}', f'{int(total * frac) // 1024}k') as dst:
            r = run(*args, dst, '--workers', 1, '--size', 0)
            assert r.returncode == 1 and r.stderr.strip().splitlines() == errors(r), r.stderr[-3000:]  # the one line, nothing else
            said = errors(r)[0]
            assert said.startswith(f'error: no space left on device writing {dst}/') and 'a rerun continues' in said, said
            stages.add('/'.join(Path(said.split(' writing ')[1].split(':')[0]).relative_to(dst).parts[:2]))
            assert not list(dst.rglob('.*.tmp'))
            for p in dst.rglob('*.png'): Image.open(p).load()  # every file there is whole
            if frac == 1.0: shutil.copytree(dst, tmp_path/'moved')
    assert stages >= {'png/images', 'png/masks'} and any(s.startswith('tiles/') for s in stages), stages
    assert run(*args, tmp_path/'moved', '--workers', 1, '--size', 0).returncode == 0  # the user frees space: a rerun finishes the work
    ref, moved = (sorted(str(p.relative_to(d)) for p in d.rglob('*.png')) for d in (tmp_path/'ref', tmp_path/'moved'))
    assert moved == ref

def test_predict_into_a_full_disk_at_each_stage(tmp_path):
    "Each GeoTIFF (its windows, then its COG copy), the polygons, the marks: a full disk at any of them is one line, nothing half-written, nothing marked done"
    import rasterio
    from unet_fastai.core import WriteError
    from unet_fastai.infer.jobs import predict_scenes, MARKS
    scenes, model = geo_scenes(tmp_path/'scenes', n=2, size=700), Path(__file__).parent/'data'/'model_446c995.pkl'
    opts = dict(probs=True, vector=True, uncertainty=True)
    predict_scenes(model, [scenes], out=tmp_path/'ref', **opts)
    total, stages = written(tmp_path/'ref'), set()
    for frac in (0.01, 0.1, 0.3, 0.9):  # measured: the first scene's uncertainty, its probabilities, its polygons, all polygons
        with tmpfs(tmp_path/f'at{frac}', f'{int(total * frac) // 1024}k') as out:
            with pytest.raises(WriteError) as e: predict_scenes(model, [scenes], out=out, **opts)
            said = str(e.value)
            assert said.startswith(f'no space left on device writing {out}/') and '\n' not in said, said
            stages.add(Path(said.split(' writing ')[1].split(':')[0]).name.split('_', 1)[-1])
            assert not list(out.rglob('.*.tmp'))
            for m in (out/MARKS).glob('*.json'):  # what is marked done is whole
                for f in json.loads(m.read_text())['outputs']:
                    if f.endswith('.tif'):
                        with rasterio.open(out/f) as ds: ds.read(1)
            if frac == 0.9: shutil.copytree(out, tmp_path/'moved')
    assert {'uncertainty.tif', 'probs.tif'} <= stages and len(stages) >= 3, stages  # measured: these and the polygons, the scene's and all
    predict_scenes(model, [scenes], out=tmp_path/'moved', **opts)  # a rerun in room finishes the work
    for f in ('s0_mask.tif', 's1_mask.tif', 's1_probs.tif'):
        with rasterio.open(tmp_path/'ref'/f) as a, rasterio.open(tmp_path/'moved'/f) as b: assert (a.read() == b.read()).all(), f

def test_one_band_scene_to_a_colour_model(tmp_path):
    "A 1-band GeoTIFF given to a model of colour scenes is refused in one line, nothing written or marked; --bands 1,1,1 reads it as gray"
    import rasterio
    from rasterio.transform import from_origin
    (tmp_path/'pan').mkdir()
    with rasterio.open(tmp_path/'pan'/'pan.tif', 'w', driver='GTiff', width=300, height=300, count=1, dtype='uint8', crs='EPSG:26986',
                       transform=from_origin(230000, 900000, 1, 1)) as o: o.write(np.full((1, 300, 300), 120, np.uint8))
    args = (command('unet_fastai_predict'), Path(__file__).parent/'data'/'model_446c995.pkl', tmp_path/'pan'/'pan.tif')
    r = run(*args, '--out', tmp_path/'out')
    assert r.returncode == 1 and errors(r) == [f"error: {tmp_path/'pan'/'pan.tif'}: one band, but the model learnt 3-band scenes, not gray ones; "
                                               "give it the scene's 3 bands, or pass --bands 1,1,1 to read this band as gray anyway"], r.stderr[-2000:]
    assert not [p for p in (tmp_path/'out').rglob('*') if p.is_file() and p.name != '.unet_fastai.lock'], list((tmp_path/'out').rglob('*'))
    r = run(*args, '--out', tmp_path/'gray', '--bands', '1,1,1')
    assert r.returncode == 0 and (tmp_path/'gray'/'pan_mask.tif').is_file(), r.stderr[-2000:]

def test_prepare_from_python_draws_no_bar_into_a_pipe(tmp_path):
    "prepare() called from a script whose output is piped: the bars of fastprogress would be lines of junk there"
    write_scenes(tmp_path/'src', n=2, size=300)
    code = f"from unet_fastai.data.prepare import prepare; prepare({str(tmp_path/'src')!r}, {str(tmp_path/'dst')!r}, workers=0); print('done')"
    r = run(command('python'), '-c', code)
    assert r.returncode == 0 and r.stdout == 'done\n' and '█' not in r.stderr and '%' not in r.stderr, (r.stdout, r.stderr[-2000:])

def test_a_model_cut_short_for_each_command(tmp_path):
    "A model.pkl copied half-way: every command that loads one says so in one line, from the file's last bytes, before torch loads"
    model = Path(__file__).parent/'data'/'model_446c995.pkl'
    half = tmp_path/'model.pkl'; half.write_bytes(model.read_bytes()[:model.stat().st_size // 2])
    scenes = geo_scenes(tmp_path/'scenes', n=1, size=128)
    said = f"error: {half}: incomplete or damaged ({half.stat().st_size:,} bytes; the end of the archive is missing); copy it again, or export it again from its training folder"
    for args in (('predict', half, scenes), ('evaluate', half, '--images', scenes, '--masks', scenes), ('suggest', half, scenes),
                 ('audit', half, '--images', scenes, '--masks', scenes), ('app', half)):
        r = run(command('python'), '-X', 'importtime', command('unet_fastai'), *args)  # Python lists every module it imports
        assert r.returncode == 1 and errors(r) == [said] and 'Traceback' not in r.stderr, (args[0], r.stderr[-2000:])
        assert not re.search(r'\|\s+torch$', r.stderr, re.M), args[0]  # said before torch (seconds) was imported
