"""Kinder's neural introspective energy model: the vectorised sideward pass against a per-node loop,
the stop-gradient of Eq. 13, Eqs. 14-16 against their definitions, layer-wise training, checkpoints,
and the AlexNet loader on a small state dict written here."""
import pytest
import torch
import torch.nn.functional as F

from energyad.methods.kinder_iem import (DESIGNS, IEMSettings, IntrospectiveEnergyModel, SidewardMLP,
                                         neighbour_features, ring_offsets)
from energyad.networks.kinder import (ALEXNET_CONV_KEYS, IEMForward, Transition, alexnet_forward,
                                      find_alexnet_weights, load_alexnet_convs)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_ring_offsets_count_and_distance():
    for d in (1, 2, 3):
        offs = ring_offsets(d)
        assert len(offs) == 8 * d == len(set(offs))
        assert all(max(abs(a), abs(b)) == d for a, b in offs)
    # Table 4's input counts: 8d (K + 1) for (K, d) = (3, 1), (15, 3), (25, 3), (35, 3), (60, 2)
    assert [8 * d * (K + 1) for K, d in ((3, 1), (15, 3), (25, 3), (35, 3), (60, 2))] == [32, 384, 624, 864, 976]


def per_node_prediction(m: SidewardMLP, a: torch.Tensor, b: int, k: int, y: int, x: int) -> torch.Tensor:
    """The prediction of one node, built by hand: neighbours by explicit indexing, then its own MLP."""
    K, H, W = a.shape[1:]
    vals, mask = [], []
    for dy, dx in ring_offsets(m.d):
        inside = 0 <= y + dy < H and 0 <= x + dx < W
        vals += [a[b, c, y + dy, x + dx] if inside else torch.tensor(0.0) for c in range(K)]
        mask.append(1.0 if inside else 0.0)
    v = torch.stack(vals + [torch.tensor(t) for t in mask])
    if m.xy:
        v = torch.cat([v, torch.tensor([x / (W - 1), y / (H - 1)])])
    if m.kin:
        v = torch.cat([v, F.one_hot(torch.tensor(k), K).float()])
    layers = m.node_layers(k, y, x)
    for j, (w, bias) in enumerate(layers):
        v = v @ w + bias
        if j < len(layers) - 1:
            v = torch.relu(v)
    return v[0]


@pytest.mark.parametrize("design", sorted(DESIGNS))
@pytest.mark.parametrize("d", [1, 2])
def test_sideward_pass_matches_per_node_loop(design, d):
    torch.manual_seed(0)
    K, H, W = 3, 4, 5
    m = SidewardMLP(K, H, W, d, hidden=(6, 4), design=design)
    a = torch.rand(2, K, H, W)
    pred = m(a)
    assert pred.shape == a.shape
    for b in range(2):
        for k in range(K):
            for y in range(H):
                for x in range(W):
                    assert pred[b, k, y, x].item() == pytest.approx(per_node_prediction(m, a, b, k, y, x).item(),
                                                                   abs=1e-5)


def test_weight_sharing_parameter_counts():
    K, H, W, d, hid = 3, 4, 5, 1, (6, 4)
    n_in = 8 * d * (K + 1)
    trunk = (n_in * 6 + 6) + (6 * 4 + 4)
    P = H * W
    count = {dz: sum(p.numel() for p in SidewardMLP(K, H, W, d, hid, dz).parameters()) for dz in "abcd"}
    assert count["a"] == trunk + K * (4 + 1)                  # last layer per kernel
    assert count["b"] == trunk + P * K * (4 + 1)              # last layer per node
    assert count["c"] == K * trunk + P * K * (4 + 1)          # hidden per kernel, last per node
    assert count["d"] == P * K * (trunk + 4 + 1)              # nothing shared


def test_receptive_fields_against_a_probe_gradient():
    """The recursion against autograd: the pixels on which a central node depends (all-positive kernels;
    max pooling swapped for average pooling of the same window, so that every window position passes a
    gradient: the receptive field is the same)."""
    from energyad.networks.kinder import TABLE4, TABLE6, receptive_fields

    assert receptive_fields(TABLE4) == [1, 4, 14, 34, 58]            # Table 4 prints 66 for the last
    assert receptive_fields(TABLE6) == [1, 19, 67, 99, 131]          # Table 6 prints 19, 83, 114, 147
    for specs in ((Transition(2, 3), Transition(2, 5)), (Transition(2, 5, stride=2, pool=3, pool_stride=2),)):
        net = IEMForward(1, specs)
        with torch.no_grad():
            for t in net.transitions:
                t.conv.weight.fill_(0.1)
                t.conv.bias.fill_(0.1)
                if isinstance(t.pool, torch.nn.MaxPool2d):
                    t.pool = torch.nn.AvgPool2d(t.pool.kernel_size, t.pool.stride)
        for l, r in enumerate(receptive_fields(specs)[1:], 1):
            x = torch.rand(1, 1, 64, 64, requires_grad=True)
            a = net(x)[l]
            a[0, 0, a.shape[-2] // 2, a.shape[-1] // 2].backward()
            rows = (x.grad[0, 0].abs().sum(1) > 0).nonzero()
            assert int(rows.max() - rows.min() + 1) == r


def test_neighbour_features_mask_and_border():
    a = torch.arange(12.0).view(1, 1, 3, 4) + 1
    f = neighbour_features(a, 1)                               # (1, 12, 16): 8 activations + 8 mask bits
    assert f.shape == (1, 12, 16)
    corner = f[0, 0]                                           # node (0, 0): only E, S, SE exist
    offs = ring_offsets(1)
    present = {o for o, bit in zip(offs, corner[8:].tolist()) if bit == 1}
    assert present == {(0, 1), (1, 0), (1, 1)}
    assert corner[offs.index((0, 1))] == a[0, 0, 0, 1] and corner[offs.index((-1, -1))] == 0


def tiny_model(design="b", train_forward=True, epochs=1):
    torch.manual_seed(0)
    net = IEMForward(1, (Transition(3, 3), Transition(4, 3)))
    s = IEMSettings(distances=(1, 1, 1), hidden=((5,), (5,), (5,)), design=design, image_size=8,
                    batch_size=4, epochs=epochs, train_forward=train_forward)
    return IntrospectiveEnergyModel(net, s)


def test_stop_gradient_targets_receive_no_gradient():
    m = tiny_model()
    x = torch.rand(3, 1, 8, 8)
    # 1. A sideward model whose output ignores its input: the loss still depends on a[1] through the
    #    target, but with the target detached (Eq. 13) the kernels get exactly zero gradient.
    for w in m.sideward[1].weights:
        torch.nn.init.zeros_(w)
    m.layer_loss(x, 1).backward()
    conv = m.net.transitions[0].conv
    assert conv.weight.grad is not None and conv.weight.grad.abs().max() == 0
    # ...whereas without the stop-gradient the same loss would move the kernels:
    conv.weight.grad = None
    a = m.net(x)[1]
    ((m.sideward[1](a) - a) ** 2).sum().backward()
    assert conv.weight.grad.abs().max() > 0
    # 2. With a live sideward model the kernel gradient equals the one through the inputs alone.
    m = tiny_model()
    conv = m.net.transitions[0].conv
    m.layer_loss(x, 1).backward()
    g_lib = conv.weight.grad.clone()
    conv.weight.grad = None
    a = m.net(x)[1]
    target = a.detach().clone()
    ((m.sideward[1](a) - target) ** 2).sum().backward()
    assert torch.allclose(g_lib, conv.weight.grad, atol=1e-6)
    # 3. Earlier layers are fixed while layer 2 trains (Algorithm 3).
    m.zero_grad()
    m.layer_loss(x, 2).backward()
    assert m.net.transitions[0].conv.weight.grad is None or m.net.transitions[0].conv.weight.grad.abs().max() == 0
    assert m.net.transitions[1].conv.weight.grad.abs().max() > 0


def test_layerwise_training_touches_only_its_layer_and_lowers_the_loss():
    m = tiny_model(epochs=15)
    x = torch.rand(8, 1, 8, 8) * 0.2 + torch.linspace(0, 0.8, 8).view(1, 1, 1, 8)   # smooth ramps
    before = {k: v.clone() for k, v in m.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    hist = m.fit_layer(x, 1, g, progress=False)
    assert hist[-1] < hist[0]
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("sideward.1.", "net.transitions.0.")) for k in changed)
    frozen = tiny_model(train_forward=False, epochs=2)
    w0 = frozen.net.transitions[0].conv.weight.clone()
    frozen.fit_layer(x, 1, g, progress=False)
    assert torch.equal(w0, frozen.net.transitions[0].conv.weight)   # transfer: kernels stay (Sec. 5.1)


def test_energies_eqs_14_to_16_against_their_definitions():
    m = tiny_model(epochs=1)
    m.s.layer_weights = (1.0, 0.5, 2.0)
    train = torch.rand(10, 1, 8, 8)
    m.fit(train, torch.Generator().manual_seed(0), progress=False)
    test = torch.rand(4, 1, 8, 8)
    # Eq. 14 by hand: statistics from a per-image loop over the training set
    with torch.no_grad():
        per_image = [m.errors(train[i:i + 1]) for i in range(10)]
        errs_test = m.errors(test)
    for l in range(3):
        e = torch.cat([p[l] for p in per_image])
        mean, std = e.mean(0), e.std(0)
        std = torch.maximum(std, 0.1 * std[std > 0].median())      # the default floor: 0.1 x the layer's median
        norm = (errs_test[l] - mean).abs() / std
        assert torch.allclose(m.normalised_errors(test)[l], norm, rtol=1e-4, atol=1e-5)
        assert torch.allclose(m.layer_energies(test)[:, l], norm.flatten(1).sum(1), rtol=1e-4)   # Eq. 15
        assert torch.allclose(m.energy_maps(test)[l].flatten(1).sum(1), norm.flatten(1).sum(1), rtol=1e-4)
    le = m.layer_energies(test)
    assert torch.allclose(m.score(test), le[:, 0] + 0.5 * le[:, 1] + 2.0 * le[:, 2], rtol=1e-5)   # Eq. 16
    amap = m.anomaly_map(test)
    assert amap.shape == (4, 1, 8, 8)
    # the anomaly map of layer 0 alone is its energy map (pixel nodes, no upsampling)
    m.s.layer_weights = (1.0, 0.0, 0.0)
    assert torch.allclose(m.anomaly_map(test), m.energy_maps(test)[0], atol=1e-5)


def test_eq14_floor_on_a_layer_with_a_constant_node():
    from energyad.methods.kinder_iem import floored_std

    m = tiny_model(epochs=1)
    train = torch.rand(12, 1, 8, 8)
    train[:, :, 0, 0] = 0.0                                       # pixel (0, 0) never varies in training
    m.fit(train, torch.Generator().manual_seed(0), progress=False)
    # the constant pixel's neighbours vary, so give it a constant error by hand: freeze its statistics
    std0 = m.err_std0.clone()
    std0[0, 0, 0] = 0.0
    m.err_std0.copy_(std0)
    assert m.constant_nodes(0) >= 1
    typical = std0[std0 > 0].median()
    test = train[:3].clone()
    test[:, :, 0, 0] = 1.0                                        # the never-seen value appears
    with torch.no_grad():
        err = m.errors(test)[0]
    dev = (err - m.err_mean0).abs()                               # |err - mean| per node, layer 0
    for floor, std_used, keep in (("absolute", std0.clamp_min(1e-6), torch.ones_like(std0)),
                                  ("relative", torch.maximum(std0, 0.1 * typical), torch.ones_like(std0)),
                                  ("drop", std0.clamp_min(1e-6), (std0 >= 0.1 * typical).float())):
        got = m.normalised_errors(test, floor)[0]
        assert torch.allclose(got, dev / std_used * keep, rtol=1e-5, atol=1e-6)
    absolute, relative, drop = (m.normalised_errors(test, f)[0][:, 0, 0, 0] for f in ("absolute", "relative", "drop"))
    assert (absolute > 1e4).all()                                 # a 1e-6 floor: the constant node weighs ~1e6
    assert torch.allclose(relative, dev[:, 0, 0, 0] / (0.1 * typical))   # at most 10 typical nodes
    assert (drop == 0).all()                                      # left out
    # floored_std on its own: a layer of stds [0, 1, 2, 3] (median of the varying ones: 2)
    s = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 2, 2)
    assert floored_std(s, "relative", 0.1)[0].flatten().tolist() == pytest.approx([0.2, 1, 2, 3])
    assert floored_std(s, "drop", 0.6)[1].flatten().tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="std_floor"):
        floored_std(s, "median")


def test_health_figures_of_a_fitted_and_a_degenerate_model():
    from energyad.health import DegenerateModelError

    m = tiny_model(epochs=40)
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(-1, 1, 8)
    slope = torch.rand(32, 2, generator=g) - 0.5                 # smooth images: random planes, predictable from neighbours
    x = 0.5 + slope[:, 0].view(-1, 1, 1, 1) * ramp.view(1, 1, 1, 8) + slope[:, 1].view(-1, 1, 1, 1) * ramp.view(1, 1, 8, 1)
    m.fit(x, torch.Generator().manual_seed(0), progress=False)
    h = m.health(x, "tiny")
    assert h.ok, h.failures
    h5 = m.health(x, "tiny", batch_size=5).checks                         # batches of unequal size
    assert {k: pytest.approx(c["value"], rel=1e-5) for k, c in h.checks.items()} == {k: c["value"] for k, c in h5.items()}
    assert {"layer0_loss_drop", "layer1_r2", "layer1_prediction_dependence", "layer2_active_share"} <= set(h.checks)
    assert h.checks["layer1_loss_drop"]["ok"] is None                     # trained kernels: a moving target
    assert h.checks["energy_spread"]["ok"]
    # the relative curve is the epoch's summed squared error over the summed squared activations
    x1 = x[:4]
    m2 = tiny_model(epochs=1)
    m2.s.batch_size = 4
    with torch.no_grad():
        a = m2.net(x1)[1]
        expected = float(((m2.sideward[1](a) - a) ** 2).sum() / (a ** 2).sum())
    m2.fit_layer(x1, 1, progress=False)                    # one batch: the curve is measured before the step
    assert m2.relative_history[1][0] == pytest.approx(expected, rel=1e-5)
    # a dead forward layer (all activations 0) and sideward models that ignore their input
    with torch.no_grad():
        m.net.transitions[1].conv.bias.fill_(-1e3)
        for w in m.sideward[0].weights:
            w.zero_()
    bad = m.health(x, "broken")
    assert bad.checks["layer2_active_share"]["ok"] is False
    assert bad.checks["layer0_prediction_dependence"]["value"] == 0 < h.checks["layer0_prediction_dependence"]["value"]
    assert bad.checks["layer0_r2"]["value"] <= 0 < h.checks["layer0_r2"]["value"]   # noted: constant prediction
    with pytest.raises(DegenerateModelError, match="broken"):
        bad.raise_if_failed()


def test_clear_errors_and_checkpoints(tmp_path):
    m = tiny_model()
    with pytest.raises(RuntimeError, match="fit"):
        m.score(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="image_size"):
        m.errors(torch.rand(1, 1, 9, 9))
    m.fit(torch.rand(4, 1, 8, 8), progress=False)
    m.save(tmp_path / "iem.pt")
    m2 = tiny_model()
    torch.nn.init.zeros_(m2.sideward[0].weights[0])
    m2.load(tmp_path / "iem.pt")
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(m.score(x), m2.score(x))
    torch.save({"model": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        m2.load(tmp_path / "other.pt")
    bigger = IntrospectiveEnergyModel(IEMForward(1, (Transition(3, 3), Transition(4, 3))),
                                      IEMSettings(distances=(1, 1, 1), hidden=((5,), (5,), (5,)), image_size=16))
    with pytest.raises(ValueError, match="iem.pt"):
        bigger.load(tmp_path / "iem.pt")


def fake_alexnet_state_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"features.0": (64, 3, 11, 11), "features.3": (192, 64, 5, 5), "features.6": (384, 192, 3, 3),
              "features.8": (256, 384, 3, 3), "features.10": (256, 256, 3, 3)}
    sd = {}
    for k, s in shapes.items():
        sd[f"{k}.weight"] = torch.randn(*s, generator=g) * 0.05
        sd[f"{k}.bias"] = torch.randn(s[0], generator=g) * 0.05
    sd["classifier.1.weight"] = torch.randn(8, 4, generator=g)                   # other keys are ignored
    return sd


def test_alexnet_loader_on_a_written_state_dict(tmp_path, monkeypatch):
    sd = fake_alexnet_state_dict()
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(sd, path)
    net = load_alexnet_convs(alexnet_forward(), path)
    for t, k in zip(net.transitions, ALEXNET_CONV_KEYS):
        assert torch.equal(t.conv.weight, sd[f"{k}.weight"]) and torch.equal(t.conv.bias, sd[f"{k}.bias"])
    # the forward pass against torchvision's AlexNet feature stack written out with F.conv2d
    x = torch.rand(1, 3, 67, 67)
    h = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h1 = F.max_pool2d(F.relu(F.conv2d(h, sd["features.0.weight"], sd["features.0.bias"], stride=4, padding=2)), 3, 2)
    h2 = F.max_pool2d(F.relu(F.conv2d(h1, sd["features.3.weight"], sd["features.3.bias"], padding=2)), 3, 2)
    h3 = F.relu(F.conv2d(h2, sd["features.6.weight"], sd["features.6.bias"], padding=1))
    h4 = F.relu(F.conv2d(h3, sd["features.8.weight"], sd["features.8.bias"], padding=1))
    acts = net(x)
    for ours, ref in zip(acts[1:], (h1, h2, h3, h4)):
        assert torch.allclose(ours, ref, atol=1e-5)
    # a checkpoint of another model: a clear error naming the file
    bad = dict(sd)
    bad["features.3.weight"] = torch.zeros(10, 64, 5, 5)
    torch.save(bad, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match="resnet.pth.*another model"):
        load_alexnet_convs(alexnet_forward(), tmp_path / "resnet.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="not an AlexNet"):
        load_alexnet_convs(alexnet_forward(), tmp_path / "x.pth")
    # finding the file: an explicit path, the environment, or a clear notice when absent
    assert find_alexnet_weights(path) == path
    monkeypatch.setenv("ENERGYAD_ALEXNET", str(path))
    assert find_alexnet_weights() == path
    monkeypatch.delenv("ENERGYAD_ALEXNET")
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path / "nodata"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    from energyad.data import DataError
    with pytest.raises(DataError, match="AlexNet weights not found.*download"):
        find_alexnet_weights()


def test_mvtec_and_alexnet_experiment_code_paths_on_a_tiny_category(tmp_path, monkeypatch):
    """The full profiles' code (Table 4 at reduced size; Table 6 with a written AlexNet file), one epoch."""
    import dataclasses
    import json

    from energyad.data.synthetic import write_synthetic_mvtec
    from energyad.experiments import kinder as exp
    from energyad.methods.kinder_iem import ALEXNET_SETTINGS

    write_synthetic_mvtec(tmp_path / "data" / "mvtec_ad", "tiny", "object", n_train=3, n_test_good=2,
                          n_test_defect=1, size=64)
    monkeypatch.setenv("ENERGYAD_DATA", str(tmp_path / "data"))
    s = dataclasses.replace(exp.IEM_MVTEC_FULL, categories=("tiny",),
                            iem=dataclasses.replace(exp.IEM_MVTEC_FULL.iem, image_size=32, epochs=1))
    strict = exp.run_iem_mvtec(s, tmp_path, "cpu", "t4", progress=False)        # 1 epoch on 3 images
    assert ("tiny" in strict["withheld"]) == (not strict["health"]["tiny"]["ok"])
    assert ("tiny" in strict["image_auroc"]) == strict["health"]["tiny"]["ok"]  # no number from a failed model
    res = exp.run_iem_mvtec(s, tmp_path, "cpu", "t4", progress=False, strict=False)
    assert set(res["image_auroc"]) == {"tiny"} and 0 <= res["pixel_auroc"]["tiny"] <= 100
    assert set(res["image_auroc_by_normalisation"]["tiny"]) == set(exp.NORMALISATIONS)
    assert res["image_auroc_by_normalisation"]["tiny"]["relative"] == res["image_auroc"]["tiny"]
    assert res["input_channels"]["tiny"] == 3 and "layer1_prediction_dependence" in res["health"]["tiny"]["checks"]
    assert (tmp_path / "t4-maps-tiny.png").exists()
    json.dumps(res)
    torch.save(fake_alexnet_state_dict(), tmp_path / "alexnet.pth")
    s = dataclasses.replace(exp.IEM_ALEXNET_FULL, categories=("tiny",), alexnet_path=str(tmp_path / "alexnet.pth"),
                            iem=dataclasses.replace(ALEXNET_SETTINGS, image_size=64, epochs=1))
    res = exp.run_iem_mvtec(s, tmp_path, "cpu", "t6", progress=False, strict=False)
    assert "tiny" in res["image_auroc"] and (tmp_path / "t6-maps-tiny.png").exists()
    missing = dataclasses.replace(s, alexnet_path=None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    from energyad.data import DataError
    with pytest.raises(DataError, match="AlexNet weights not found"):
        exp.run_iem_mvtec(missing, tmp_path, "cpu", "t6", progress=False, strict=False)
