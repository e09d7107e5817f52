"Multispectral scenes end to end: generated 4-band GeoTIFFs (RGB + near infrared) whose roads only the NIR band shows"
import json, subprocess, warnings
import numpy as np, pytest, rasterio, torch
from pathlib import Path
from PIL import Image
from rasterio.transform import from_origin
from conftest import command
from unet_fastai.data.synthetic import make_scene
from unet_fastai.data.prepare import prepare
from unet_fastai.train.loop import train_roads
from unet_fastai.infer.evaluate import evaluate_scenes
from unet_fastai.infer.loading import load_model
from unet_fastai.spec import model_spec

def write_scenes4(root, seeds, size=384):
    "4-band GeoTIFFs: RGB of one generated scene (its roads are decoys), NIR bright on the true roads of another"
    (root/'images').mkdir(parents=True); (root/'masks').mkdir()
    for i in seeds:
        rgb, road = make_scene(100 + i, size=size)[0], make_scene(200 + i, size=size)[1]
        nir = np.clip(60 + 150 * (road > 0) + np.random.default_rng(i).normal(0, 25, road.shape), 0, 255).astype(np.uint8)
        with rasterio.open(root/'images'/f's{i}.tif', 'w', driver='GTiff', height=size, width=size, count=4, dtype='uint8',
                           crs='EPSG:26986', transform=from_origin(230000 + 1000 * i, 900000, 1, 1)) as ds:
            ds.write(np.concatenate([np.moveaxis(rgb, -1, 0), nir[None]]))
        Image.fromarray(road).save(root/'masks'/f's{i}.png')
    return root

@pytest.fixture(scope='module')
def models(tmp_path_factory):
    "The same recipe (the demo's: plain cross-entropy, lr 5e-3, every layer trained; bs 2 for 60 steps) trained on all 4 bands and on RGB alone (prepare --bands 1,2,3,4, or the default bands)"
    d = tmp_path_factory.mktemp('nir')
    write_scenes4(d/'scenes', range(6)); write_scenes4(d/'test', [50])
    out = {}
    for name, bands in (('nir', [1, 2, 3, 4]), ('rgb', None)):
        prepare(d/'scenes', d/f'prep_{name}', size=256, tile=128, workers=0, progress=False, bands=bands)
        torch.manual_seed(0)
        train_roads(d/f'prep_{name}', bs=2, epochs=6, freeze_epochs=0, lr=5e-3, loss='ce', class_weights=None, pretrained=False,
                    out=d/name, show=False)
        out[name] = d/name/'model.pkl'
    return d, out

def test_nir_band_is_learnt(models):
    "Only the 4-band model can find the roads: its relaxed breakeven on an unseen scene is far above the RGB model's"
    d, m = models
    warnings.filterwarnings('ignore')
    learn = load_model(m['nir'])
    assert model_spec(learn).bands == [1, 2, 3, 4] and learn.model.stages[0][0].in_channels == 4
    pairs = [(d/'test'/'images'/'s50.tif', d/'test'/'masks'/'s50.png')]
    be = {k: evaluate_scenes(load_model(p), pairs)['relaxed_breakeven'] for k, p in m.items()}
    assert be['nir'] > be['rgb'] + 0.2, be

def test_nir_geotiff_prediction_and_onnx(models, tmp_path):
    "The CLI reads the bands the model was trained on; the ONNX export of a 4-band model predicts the same"
    from unet_fastai.infer.onnx import export_onnx
    d, m = models
    scene = d/'test'/'images'/'s50.tif'
    warnings.filterwarnings('ignore')
    export_onnx(load_model(m['nir']), tmp_path/'nir.onnx')
    for model, out in ((m['nir'], 'pkl'), (tmp_path/'nir.onnx', 'onnx')):
        r = subprocess.run([command('unet_fastai_predict'), str(model), str(scene), '--out', str(tmp_path/out)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
    with rasterio.open(tmp_path/'pkl'/'s50_mask.tif') as a, rasterio.open(tmp_path/'onnx'/'s50_mask.tif') as b, rasterio.open(scene) as s:
        assert (a.crs, a.transform, a.shape) == (s.crs, s.transform, s.shape)
        assert (a.read(1) == b.read(1)).mean() > 0.999
    r = subprocess.run([command('unet_fastai_predict'), str(m['nir']), str(scene), '--out', str(tmp_path/'x'), '--bands', '1,2,3'],
                       capture_output=True, text=True)
    assert r.returncode == 1 and 'the model takes 4 bands' in r.stderr
