"""The inner loops make no host-device synchronisation per step (counted on the CPU, energyad.accel)."""
import torch

from energyad.accel import count_host_syncs
from energyad.methods import dehaene as dh
from energyad.methods import genc
from energyad.methods import matsubara as mt
from energyad.methods.kinder_iem import IEMSettings, IntrospectiveEnergyModel
from energyad.networks.bergmann_ae import BergmannAE
from energyad.networks.genc import EnergyNet
from energyad.networks.kinder import IEMForward, Transition
from energyad.networks.matsubara_vae import MatsubaraVAE


def test_the_counter_sees_reads_and_data_dependent_shapes_and_not_arithmetic():
    x = torch.rand(6)
    with count_host_syncs() as ops:
        y = (x * 2 + 1).exp().sum(0)
    assert ops == [] and y.ndim == 0
    with count_host_syncs() as ops:
        x.sum().item()
        float(x.max())
        if (x > 2).any():
            pass
        _ = x[x > 0.5]
        z = torch.zeros(6)
        z[x > 0.5] = 1.0
        _ = torch.nonzero(x > 0.5)
    assert len(ops) == 6, ops


def _syncs(fn) -> int:
    with count_host_syncs() as ops:
        fn()
    return len(ops)


def test_projection_steps_make_no_sync_without_a_stopping_rule_and_one_with():
    torch.manual_seed(0)
    model = dh.AutoencoderModel(BergmannAE(1, 32, latent=4, width=4), "l2ae")
    x = torch.rand(3, 1, 32, 32)
    few = _syncs(lambda: dh.project(model, x, dh.ProjectionSettings(steps=2)))
    many = _syncs(lambda: dh.project(model, x, dh.ProjectionSettings(steps=7)))
    assert few == many
    stop = dh.ProjectionSettings(steps=7, stop_loss=-1.0)      # never reached: every step checks
    assert _syncs(lambda: dh.project(model, x, stop)) == many + 7


def test_autoencoder_training_reads_once_an_epoch_not_once_a_batch():
    def run(n):
        torch.manual_seed(0)
        model = dh.AutoencoderModel(BergmannAE(1, 32, latent=4, width=4), "l2ae")
        s = dh.AETrainSettings(epochs=2, batch_size=64, n_train=n)
        return lambda: dh.train_autoencoder(model, torch.rand(n, 1, 32, 32), s, torch.Generator().manual_seed(0),
                                            progress=False)
    assert _syncs(run(2)) == _syncs(run(300))     # 1 against 5 batches, 1 against 2 evaluation batches


def test_matsubara_training_reads_once_an_epoch_not_once_a_batch():
    def run(n):
        torch.manual_seed(0)
        vae = MatsubaraVAE(1, 8, n_conv=1, n_c=4, n_z=3)
        s = mt.VAESettings(epochs=2, batch_size=4)
        return lambda: mt.train(vae, torch.rand(n, 1, 8, 8), s, mt.negative_elbo_sampled,
                                torch.Generator().manual_seed(0), progress=False)
    assert _syncs(run(4)) == _syncs(run(16))


def test_iem_training_reads_once_an_epoch_not_once_a_batch():
    def run(n):
        torch.manual_seed(0)
        net = IEMForward(1, (Transition(3, 3),))
        s = IEMSettings(distances=(1, 1), hidden=((5,), (5,)), image_size=8, batch_size=2, epochs=1)
        m = IntrospectiveEnergyModel(net, s)
        return lambda: m.fit(torch.rand(n, 1, 8, 8), torch.Generator().manual_seed(0), progress=False)
    assert _syncs(run(4)) == _syncs(run(12))


def test_sgld_steps_make_no_sync():
    torch.manual_seed(0)
    net = EnergyNet(1, 8, (4, 8))
    x0 = torch.rand(2, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    def run(steps):
        return lambda: genc.sgld_sample(net, x0, genc.SGLDSettings(steps=steps), generator=g, stats=genc.SGLDStats())
    assert _syncs(run(2)) == _syncs(run(9))
