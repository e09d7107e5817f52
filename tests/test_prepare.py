"The prepare stage end to end: real Massachusetts scenes as TIFF, every TIFF layout, bad input through the CLI, kill and rerun"
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pytest, tifffile
from PIL import Image
from conftest import shared, command
from unet_fastai.io.masks import NODATA
from unet_fastai.io.raster import to_uint8
from unet_fastai.data.prepare import prepare, read_tiles
from unet_fastai.io.geometry import assemble_tiles, parse_tile_name
from unet_fastai.data.synthetic import write_scenes, write_large_scene

def load(p): return np.asarray(Image.open(p))

def pngs_ok(folder):
    "Every PNG under `folder` decodes completely; no temporaries are left"
    for p in Path(folder).rglob('*.png'): Image.open(p).load()
    return not list(Path(folder).rglob('*.tmp'))

@pytest.fixture(scope='module')
def roads_tiff(tmp_path_factory):
    "The real Massachusetts scenes of ../shared, written as TIFF in the Massachusetts layout (sat/*.tiff, map/*.tif)"
    src, dst = shared('mass_roads')/'train', tmp_path_factory.mktemp('roads')
    for sub, ext in (('sat', '.tiff'), ('map', '.tif')):
        (dst/sub).mkdir()
        for p in sorted((src/sub).glob('*.png')): tifffile.imwrite(dst/sub/(p.stem + ext), load(p))
    return dst

def test_real_scenes_from_tiff(roads_tiff, tmp_path):
    out = tmp_path/'out'
    r = subprocess.run([command('unet_fastai_prepare'), str(roads_tiff), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert '2 scenes prepared' in r.stdout
    for stem in ('21628930_15', '25229185_15'):
        png = load(out/'png/images'/f'{stem}.png')
        assert png.shape == (1500, 1500, 3)
        assert (png == tifffile.imread(roads_tiff/'sat'/f'{stem}.tiff')).all()
        m = load(out/'png/masks'/f'{stem}.png')
        raw = tifffile.imread(roads_tiff/'map'/f'{stem}.tif')
        assert ((raw == 255) == (m == 1)).all() and set(np.unique(m)) == {0, 1}
        for kind in ('images', 'masks'):
            resized = load(out/'resized'/kind/f'{stem}.png')
            assert resized.shape[:2] == (512, 512)
            tiles = read_tiles(out/'tiles'/kind, stem)
            assert len(tiles) == 16 and all(t.shape[:2] == (128, 128) for t in tiles.values())
            assert (assemble_tiles(tiles) == resized).all()  # the round trip, pixel for pixel
        # masks resized with NEAREST: values stay in {0,1}, road share about the same
        rm = load(out/'resized/masks'/f'{stem}.png')
        assert set(np.unique(rm)) == {0, 1} and abs(rm.mean() - m.mean()) < 0.01
    assert pngs_ok(out)

@pytest.mark.parametrize('dtype', [np.uint8, np.uint16])
@pytest.mark.parametrize('layout', ['gray', 'rgb', 'rgba', 'planar'])
def test_tiff_layouts(tmp_path, dtype, layout):
    rng = np.random.default_rng(1)
    shape = {'gray': (300, 260), 'rgb': (300, 260, 3), 'rgba': (300, 260, 4), 'planar': (3, 300, 260)}[layout]
    img = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    mask = np.zeros((300, 260), np.uint8); mask[100:200, 50:90] = 255
    (tmp_path/'src/images').mkdir(parents=True); (tmp_path/'src/masks').mkdir()
    kw = dict(extrasamples=['unassalpha']) if layout == 'rgba' else dict(planarconfig='separate') if layout == 'planar' else {}
    tifffile.imwrite(tmp_path/'src/images/s.tif', img, photometric='minisblack' if layout == 'gray' else 'rgb', **kw)
    tifffile.imwrite(tmp_path/'src/masks/s.tif', mask)
    prepare(tmp_path/'src', tmp_path/'out', size=256, tile=128, overlap=0, workers=0, progress=False)
    png = load(tmp_path/'out/png/images/s.png')
    planes = np.moveaxis(img, 0, -1) if layout == 'planar' else img
    expect = to_uint8(planes if layout in ('gray', 'rgb', 'planar') else planes[..., :3])
    assert png.dtype == np.uint8 and (png == expect).all()
    assert len(list((tmp_path/'out/tiles/images').iterdir())) == 4
    # an alpha of 0 is no imagery (random alpha: about 1 pixel in 255): void (NODATA) in the mask, not background
    vals = set(np.unique(load(tmp_path/'out/resized/masks/s.png')).tolist())
    assert vals == ({0, 1, NODATA} if layout == 'rgba' and dtype == np.uint8 else {0, 1}), vals  # uint16: alpha 0 is too rare

def test_overlap_and_odd_sizes_round_trip(tmp_path):
    write_scenes(tmp_path/'src', n=1, size=700)
    prepare(tmp_path/'src', tmp_path/'out', size=0, tile=128, overlap=40, workers=0, progress=False)
    names = [parse_tile_name(p.name) for p in (tmp_path/'out/tiles/images').iterdir()]
    assert sorted({y for _, y, _ in names}) == [0, 88, 176, 264, 352, 440, 528, 572]  # last aligned to 700-128
    for kind in ('images', 'masks'):
        assert (assemble_tiles(read_tiles(tmp_path/'out/tiles'/kind, 'scene_000')) == load(tmp_path/'out/png'/kind/'scene_000.png')).all()

@pytest.fixture
def good_src(tmp_path):
    write_scenes(tmp_path/'src', n=2, size=400)
    return tmp_path/'src'

def run_prepare(*args):
    return subprocess.run([command('unet_fastai_prepare'), *map(str, args), '--size', '256'], capture_output=True, text=True)

def _zero(p): p.write_bytes(b'')
def _truncate(p): p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 3])
def _corrupt(p, seed=16):  # seed 16: the garbage makes tifffile log a line per bad tag (7 % of random garbage does)
    b = bytearray(p.read_bytes()); b[8:4000] = np.random.default_rng(seed).bytes(3992); p.write_bytes(bytes(b))
def _other_size(p): tifffile.imwrite(p, np.zeros((300, 400), np.uint8))
def _odd_values(p): tifffile.imwrite(p, (np.arange(400 * 400) % 3 * 100).reshape(400, 400).astype(np.uint8))

@pytest.mark.parametrize('damage,which,expect', [
    (_zero, 'map', 'empty file (0 bytes)'), (_zero, 'sat', 'empty file (0 bytes)'),
    (_truncate, 'sat', 'corrupt or truncated'), (_corrupt, 'sat', 'corrupt or truncated'),
    (_other_size, 'map', 'mask is 400×300 but its image'), (_odd_values, 'map', 'mask values 100, 200 are not in the mask map')])
def test_bad_input(good_src, tmp_path, damage, which, expect):
    bad = good_src/which/'scene_001.tif'
    damage(bad)
    out = tmp_path/'out'
    r = run_prepare(good_src, out)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: {bad}: ') and expect in lines[0], r.stderr
    assert 'Traceback' not in r.stderr
    assert not out.exists() or not [p for p in out.rglob('scene_001*') if p.is_file()]  # nothing of the bad scene
    r = run_prepare(good_src, out, '--skip-bad')
    assert r.returncode == 0 and f'skipped: {bad}: ' in r.stdout
    assert (out/'tiles/images/scene_000_y00128_x00128.png').exists() and pngs_ok(out)
    assert not [p for p in out.rglob('scene_001*') if p.is_file()]

def test_empty_and_missing_source(tmp_path):
    (tmp_path/'empty').mkdir()
    for src, msg in ((tmp_path/'empty', 'no images'), (tmp_path/'missing', 'source folder not found')):
        r = run_prepare(src, tmp_path/'out')
        assert r.returncode == 1 and msg in r.stderr and str(src) in r.stderr
    assert not (tmp_path/'out').exists()

def test_unpaired_are_reported(good_src, tmp_path):
    (good_src/'map'/'scene_001.tif').rename(good_src/'map'/'other.tif')
    r = run_prepare(good_src, tmp_path/'out')
    assert r.returncode == 0 and '1 scenes prepared' in r.stdout
    assert f'unpaired (no partner of the same stem): {good_src}/sat/scene_001.tif' in r.stdout
    assert f'unpaired (no partner of the same stem): {good_src}/map/other.tif' in r.stdout

def test_kill_then_rerun(tmp_path):
    src = tmp_path/'src'
    write_scenes(src, n=8, size=1500)
    ref = tmp_path/'ref'
    prepare(src, ref, workers=2, progress=False)
    out = tmp_path/'out'
    p = subprocess.Popen([command('unet_fastai_prepare'), str(src), str(out), '--workers', '2'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out/'tiles/images').glob('*.png')) if (out/'tiles/images').exists() else []) < 20:
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    done = [json.loads(m.read_text()).get('finished') for m in (out/'.done').glob('*.json')]
    assert len(list((ref/'tiles/images').iterdir())) == 128
    assert 0 < len(list((out/'tiles/images').glob('*.png'))) < 128, 'kill landed before or after the work: slow it or speed it'
    for f in out.rglob('*.png'): Image.open(f).load()  # no truncated PNG anywhere
    r = subprocess.run([command('unet_fastai_prepare'), str(src), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{sum(bool(d) for d in done)} already done" in r.stdout
    assert pngs_ok(out)
    files = sorted(p.relative_to(ref) for p in ref.rglob('*.png'))
    assert files == sorted(p.relative_to(out) for p in out.rglob('*.png'))
    assert all((load(ref/f) == load(out/f)).all() for f in files)

PEAK = ("import re, sys; import unet_fastai.io.raster as r; r.GDAL_CACHE = 16 << 20; from unet_fastai.data.prepare import prepare; "
        "prepare(sys.argv[1], sys.argv[2], size=0, scale=0.25, workers=0, progress=False); "
        "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) * 1024)")  # peak RSS of this process

def test_memory_does_not_grow_with_scene_rows(tmp_path):
    """The budget: peak RSS = the process + GDAL's block cache + strips of rows (∝ width); 8× the rows, no more memory
    (measured: 119.8 → 121.1 MB here, 142.2 → 144.1 MB in a fresh CI environment, whose process is larger)"""
    peaks = {}
    for h in (2000, 16000):
        write_large_scene(tmp_path/f's{h}', h, 3000)
        r = subprocess.run([sys.executable, '-c', PEAK, str(tmp_path/f's{h}'), str(tmp_path/f'o{h}')], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        peaks[h] = int(r.stdout)
        assert load(tmp_path/f'o{h}/resized/images/s.png').shape == (h // 4, 750, 3)
    added = 14000 * 3000  # pixels
    assert peaks[16000] - peaks[2000] < 0.25 * added, peaks  # whole-scene reading took 11 B a pixel (issue 12)

def children(pid):
    return [int(c) for t in Path(f'/proc/{pid}/task').iterdir() for c in (t/'children').read_text().split()]

def alive(pid):
    try: return 'State:\tZ' not in Path(f'/proc/{pid}/status').read_text()
    except FileNotFoundError: return False

@pytest.fixture(scope='module')
def many_scenes(tmp_path_factory):
    src = tmp_path_factory.mktemp('many')
    write_scenes(src, n=12, size=2500)
    return src

def finished(out): return any(json.loads(m.read_text()).get('finished') for m in out.glob('.done/*.json'))

def start_prepare(src, out):
    "The CLI with 2 workers, in a session of its own; returns it once both workers run and a scene is finished"
    p = subprocess.Popen([command('unet_fastai_prepare'), str(src), str(out), '--workers', '2'], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and (len(children(p.pid)) < 2 or not finished(out)): time.sleep(0.05)
    assert len(children(p.pid)) >= 2, 'the workers did not start'
    return p

def test_workers_die_with_killed_parent(many_scenes, tmp_path):
    p = start_prepare(many_scenes, tmp_path/'out')
    workers = children(p.pid)
    os.kill(p.pid, signal.SIGKILL); p.wait()  # the parent alone, as the OOM killer or `kill -9 PID` would
    deadline = time.time() + 5
    while time.time() < deadline and any(map(alive, workers)): time.sleep(0.05)
    assert not any(map(alive, workers)), 'workers outlived their parent'

def test_ctrl_c_stops_everything_in_one_line(many_scenes, tmp_path):
    p = start_prepare(many_scenes, tmp_path/'out')
    workers = children(p.pid)
    t = time.time()
    os.killpg(p.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole foreground group
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130 and time.time() - t < 10
    assert err.strip().splitlines() == ['unet_fastai_prepare: interrupted; files already finished are kept'], err
    assert not any(map(alive, workers))
    r = subprocess.run([command('unet_fastai_prepare'), str(many_scenes), str(tmp_path/'out')], capture_output=True, text=True)
    assert r.returncode == 0 and '12 scenes prepared' not in r.stdout and pngs_ok(tmp_path/'out')  # resumed

def test_same_scenes_by_another_path_are_not_redone(good_src, tmp_path):
    assert '2 scenes prepared' in run_prepare(good_src, tmp_path/'out').stdout
    r = subprocess.run([command('unet_fastai_prepare'), os.path.relpath(good_src, tmp_path), 'out', '--size', '256'],
                       capture_output=True, text=True, cwd=tmp_path)
    assert '0 scenes prepared, 2 already done' in r.stdout, r.stdout + r.stderr
    os.utime(good_src/'sat/scene_001.tif')  # changed since: redone
    assert '1 scenes prepared, 1 already done' in run_prepare(good_src, tmp_path/'out').stdout

def test_aspect_ratio_kept_and_enlarging_said(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (777, 1501, 3), dtype=np.uint8)
    (tmp_path/'src/images').mkdir(parents=True)
    tifffile.imwrite(tmp_path/'src/images/wide.tif', img); tifffile.imwrite(tmp_path/'src/images/dot.tif', img[:1, :1])
    r = subprocess.run([command('unet_fastai_prepare'), tmp_path/'src', tmp_path/'out'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert load(tmp_path/'out/resized/images/wide.png').shape == (265, 512, 3)  # not squashed to 512×512
    assert r.stderr.strip().splitlines() == [f"warning: {tmp_path/'src/images/dot.tif'}: 1×1 is enlarged 512.0× to 512×512, so "
                                             "its tiles repeat pixels; lower --size (or --size 0 to keep the scene's size)"]
    assert '\r' not in r.stdout + r.stderr and '█' not in r.stdout + r.stderr  # no progress bars in a log

def test_one_prepare_per_folder(many_scenes, tmp_path):
    "A second prepare into a folder another one is writing names the holder and exits 1 (its temporaries untouched); --wait waits; a killed holder blocks nobody"
    out = tmp_path/'out'
    p = start_prepare(many_scenes, out)
    r = subprocess.run([command('unet_fastai_prepare'), str(many_scenes), str(out)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        f"error: {out} is in use by process {p.pid} (unet_fastai_prepare, started "), r.stderr
    assert p.poll() is None  # the first one goes on
    waiting = subprocess.Popen([command('unet_fastai_prepare'), str(many_scenes), str(out), '--wait'], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    assert waiting.poll() is None  # waits while the folder is in use
    os.killpg(p.pid, signal.SIGKILL); p.wait()  # the holder and its workers, killed
    o, e = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, e[-2000:]
    assert 'already done' in o and pngs_ok(out) and not list(out.rglob('.*.tmp')) and not (out/'.unet_fastai.lock').exists()
