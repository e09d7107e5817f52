"bench/gpu.py --smoke: every code path of the GPU check, on this CPU with tiny sizes, so a device's minutes are never spent on a broken script"
import json, subprocess, sys
from conftest import ROOT

def test_gpu_smoke(tmp_path):
    out = tmp_path/'gpu.json'
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'gpu.py'), '--smoke', '--json', str(out)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = json.loads(out.read_text())
    assert list(res['modes']) == ['fp32', 'bf16', 'fp16', 'bf16+cl', 'bf16+cl+compile']
    assert all(m['finite'] and len(m['losses']) == res['steps'] and m['img_s'] > 0 for m in res['modes'].values())
    assert all(c['ok'] for c in res['curves'].values()) and res['modes']['fp32']['flops'] > 1e9
    assert sorted(res['loader']) == ['0/off', '0/on', '1/off', '1/on', '2/off', '2/on']
    assert res['predict']['ok'] and len(res['predict']['rates']) == 3
    assert res['torchrun']['ok'], res['torchrun']  # 2 CPU processes (gloo) in the smoke run
    assert '| bf16+cl+compile |' in r.stdout and 'all checks pass' in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ['gpu.json']  # nothing left behind
