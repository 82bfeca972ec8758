"""Generators for data-free KD: output shapes from input_shape, output layers, gradients, recipe errors."""
import pytest
import torch

from edgedistill.errors import UserInputError
from edgedistill.models.generators import GENERATORS, build_generator
from edgedistill.registry import MODELS


@pytest.mark.parametrize("shape", [(1, 150), (6, 100), (3, 57), (2, 5), (1, 8, 8), (3, 12, 10), (1, 5, 7)])
def test_output_shape_follows_input_shape(shape):
    torch.manual_seed(0)
    gen = build_generator({"nz": 16, "width": 8}, shape)
    x = gen(torch.randn(4, 16))
    assert x.shape == (4, *shape)
    assert torch.isfinite(x).all()


def test_bn_output_is_standardised_per_channel_in_train_mode():
    torch.manual_seed(0)
    gen = build_generator({"nz": 8, "width": 8, "output": "bn"}, (3, 40)).train()
    x = gen(torch.randn(16, 8))
    mean = x.mean((0, 2))
    var = x.var((0, 2), unbiased=False)
    assert torch.allclose(mean, torch.zeros(3), atol=1e-4)
    assert torch.allclose(var, torch.ones(3), atol=1e-2)


def test_tanh_output_is_bounded_by_scale_and_linear_is_not_standardised():
    torch.manual_seed(0)
    gen = build_generator({"nz": 8, "width": 8, "output": "tanh", "scale": 0.5}, (2, 8, 8))
    x = gen(torch.randn(8, 8) * 100)
    assert x.abs().max() <= 0.5 + 1e-6
    lin = build_generator({"nz": 8, "width": 8, "output": "linear"}, (2, 30))
    y = lin(torch.randn(8, 8))
    # DCGAN init N(0, 0.02): a linear output is tiny, nowhere near unit variance
    assert y.var().item() < 0.1


@pytest.mark.parametrize("shape", [(2, 33), (1, 9, 9)])
def test_every_parameter_gets_a_gradient_and_the_noise_matters(shape):
    torch.manual_seed(0)
    gen = build_generator({"nz": 8, "width": 4}, shape)
    z = torch.randn(5, 8, requires_grad=True)
    x = gen(z)
    (x * torch.randn_like(x)).sum().backward()
    for name, p in gen.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert z.grad is not None and z.grad.abs().sum() > 0
    a, b = gen(torch.randn(4, 8)), gen(torch.randn(4, 8))
    assert not torch.allclose(a, b)


def test_dcgan_initialisation_is_small_normal():
    gen = build_generator({"nz": 64, "width": 32}, (1, 150))
    w = gen.fc.weight
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002


@pytest.mark.parametrize("cfg, message", [
    ({"nz": 0}, r"method.params.generator.nz: Input should be greater than or equal to 1"),
    ({"nz": True}, r"method.params.generator.nz: Input should be a valid integer"),
    ({"width": 2.5}, r"method.params.generator.width: Input should be a valid integer"),
    ({"output": "sigmoid"}, r"method.params.generator.output: Input should be 'bn', 'tanh' or 'linear'"),
    ({"scale": -1}, r"method.params.generator.scale: Input should be greater than 0"),
    ({"scale": float("inf")}, r"method.params.generator.scale: expected a finite number"),
    ({"depth": 3}, r"method.params.generator.depth: unknown parameter for a generator; expected one of: nz, width"),
    ({"name": "stylegan"}, r"method.params.generator.name: unknown generator 'stylegan'"),
    ("big", r"method.params.generator: expected a mapping"),
])
def test_bad_generator_sections_name_the_key(cfg, message):
    with pytest.raises(UserInputError, match=message):
        build_generator(cfg, (1, 20))


def test_the_generator_parameters_are_one_typed_model_with_the_defaults():
    from edgedistill.models.generators import DCGANParams, GeneratorParams
    from edgedistill.registry import typed_params

    assert GeneratorParams().model_dump() == {"nz": 64, "width": 32, "coarse": 2, "output": "bn", "scale": 3.0,
                                             "name": "dcgan"}
    assert typed_params(GENERATORS.entry("dcgan")) is DCGANParams
    with pytest.raises(UserInputError, match=r"key.nz: Input should be greater than or equal to 1"):
        GENERATORS.get("dcgan")((1, 20), key="key", nz=0)


def test_bad_input_rank_is_refused():
    with pytest.raises(UserInputError, match=r"input shape \(20,\)"):
        build_generator({}, (20,))


def test_generators_are_not_classifier_zoo_models():
    assert "dcgan" in GENERATORS.names()
    assert "dcgan" not in MODELS.names()
