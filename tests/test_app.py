"The web demo as a person uses it: a real headless Chromium uploads an image, waits for the overlay and checks it"
import io, os, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from unet_fastai import prepare, train_roads
from unet_fastai.data.synthetic import write_scenes, make_scene

@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "A briefly trained road model, served by `unet_fastai_app` on a free local port (uploads up to 2 MB, 2 predictions at once, 8 waiting): (base URL, learner, folder)"
    d = tmp_path_factory.mktemp('app')
    write_scenes(d/'scenes', n=3, size=256)
    prepare(d/'scenes', d/'prep', size=256, tile=128, workers=0, progress=False)
    learn = train_roads(d/'prep', bs=4, epochs=1, freeze_epochs=0, lr=1e-3, pretrained=False, out=d/'m')
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    env = {**os.environ, 'GRADIO_ANALYTICS_ENABLED': 'False', 'NO_PROXY': '127.0.0.1,localhost', 'GRADIO_TEMP_DIR': str(d/'gradio')}
    log = open(d/'server.log', 'w')
    server = subprocess.Popen([shutil.which('unet_fastai_app', path=Path(sys.executable).parent), d/'m'/'model.pkl',
                               '--port', str(port), '--max-mb', '2', '--concurrency', '2', '--queue', '8'], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f'http://127.0.0.1:{port}'
    for _ in range(240):
        try: urllib.request.urlopen(base, timeout=5); break
        except OSError: time.sleep(0.5)
    else: pytest.fail(f"the app did not start: {(d/'server.log').read_text()[-2000:]}")
    yield base, learn, d
    server.terminate(); server.wait(30); log.close()

def upload_and_submit(browser, base, path):
    "Open the page, choose `path` in the image input and press Submit, as a person would"
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(base)
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, 'input[type=file]'))
    browser.find_element(By.CSS_SELECTOR, 'input[type=file]').send_keys(str(path))
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, 'img[src*="gradio_api/file="]'))  # the preview
    browser.find_element(By.XPATH, "//button[contains(., 'Submit')]").click()
    return WebDriverWait(browser, 120)

def test_upload_shows_the_overlay(browser, served, tmp_path):
    base, learn, d = served
    scene = make_scene(7, size=200)[0]
    Image.fromarray(scene).save(tmp_path/'scene.png')
    from selenium.webdriver.common.by import By
    from unet_fastai.cli.app import segment_fn
    wait = upload_and_submit(browser, base, tmp_path/'scene.png')
    outputs = wait.until(lambda b: [i.get_attribute('src') for i in b.find_elements(By.CSS_SELECTOR, 'img[src*="gradio_api/file="]')
                                    if i.get_attribute('src').endswith('image.png')] or None)  # the outputs, once predicted
    assert len(outputs) == 2, outputs  # overlay and mask
    shown = [np.asarray(Image.open(io.BytesIO(urllib.request.urlopen(u, timeout=30).read())).convert('RGB')) for u in outputs]
    overlay, mask = segment_fn(learn)(scene)
    assert shown[0].shape == (200, 200, 3) and (shown[0] == overlay).all(-1).mean() > 0.999  # the overlay of this image
    assert (shown[1][..., 0] == mask).mean() > 0.999
    browser.save_screenshot(str(tmp_path/'page.png'))
    assert len(np.unique(np.asarray(Image.open(tmp_path/'page.png').convert('RGB')).reshape(-1, 3), axis=0)) > 100  # drawn

def test_corrupt_upload_is_said_on_the_page(browser, served, tmp_path):
    base, _, d = served
    (tmp_path/'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + np.random.default_rng(0).bytes(3000))
    from selenium.webdriver.common.by import By
    wait = upload_and_submit(browser, base, tmp_path/'broken.png')
    text = wait.until(lambda b: 'cannot be decoded' in b.find_element(By.TAG_NAME, 'body').text and b.find_element(By.TAG_NAME, 'body').text)
    assert 'broken.png: cannot be decoded: the file is corrupt or not an image' in text and 'Traceback' not in text
    assert 'Traceback' not in (d/'server.log').read_text()

def test_concurrent_clients_and_an_oversized_upload(served, tmp_path):
    "4 clients at once (gradio's client, loopback) are all answered; an upload over --max-mb is refused, saying so; the server lives on"
    from concurrent.futures import ThreadPoolExecutor
    from gradio_client import Client, handle_file
    base, learn, d = served
    for i in range(4): Image.fromarray(make_scene(20 + i, size=300)[0]).save(tmp_path/f's{i}.png')
    def ask(path): return Client(base, verbose=False).predict(handle_file(str(path)), api_name='/predict')
    t = time.time()
    with ThreadPoolExecutor(4) as ex: answers = list(ex.map(ask, [tmp_path/f's{i}.png' for i in range(4)]))
    assert time.time() - t < 300 and len(answers) == 4
    for overlay_path, mask_path in answers: assert np.asarray(Image.open(overlay_path)).shape[:2] == (300, 300)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)).save(tmp_path/'big.png')  # ~4 MB
    assert (tmp_path/'big.png').stat().st_size > 2e6
    with pytest.raises(Exception) as e: ask(tmp_path/'big.png')
    assert 'size' in str(e.value).lower() or '413' in str(e.value), str(e.value)
    assert len(ask(tmp_path/'s0.png')) == 2  # alive
    assert 'Traceback' not in (d/'server.log').read_text()
