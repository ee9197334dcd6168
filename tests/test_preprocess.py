from __future__ import annotations

import numpy as np
import pytest
import skimage
from skimage import exposure, feature, filters, restoration, transform

from microcli.errors import OpError, PipelineError
from microcli.preprocess import OPS, Pipeline, Step


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64), np.float32)
    img[16:48, 16:48] = 0.8
    return np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1).astype(np.float32)


def run(spec: str, image: np.ndarray) -> np.ndarray:
    return Pipeline.parse(spec).apply(image)


@pytest.mark.parametrize("spec,direct", [
    ("gaussian:sigma=2", lambda im: filters.gaussian(im, sigma=2, preserve_range=True)),
    ("median:radius=2", lambda im: filters.median(im, footprint=skimage.morphology.disk(2), mode="reflect")),
    ("sobel", filters.sobel),
    ("scharr", filters.scharr),
    ("laplace:abs=false", lambda im: filters.laplace(im, ksize=3)),
    ("canny:sigma=2", lambda im: feature.canny(im, sigma=2)),
    ("canny:sigma=1,low=0.5,high=0.9,quantile=true",
     lambda im: feature.canny(im, sigma=1, low_threshold=0.5, high_threshold=0.9, use_quantiles=True)),
    ("unsharp:radius=2,amount=1.5", lambda im: filters.unsharp_mask(im, radius=2, amount=1.5, preserve_range=True)),
    ("equalize", exposure.equalize_hist),
    ("clahe:clip=0.02", lambda im: exposure.equalize_adapthist(im, clip_limit=0.02)),
    ("threshold:method=li", lambda im: im > filters.threshold_li(im)),
    ("threshold:method=yen,invert=true", lambda im: im <= filters.threshold_yen(im)),
    ("denoise:weight=0.2", lambda im: restoration.denoise_tv_chambolle(im, weight=0.2)),
    ("denoise:method=nlm,h=0.04", lambda im: restoration.denoise_nl_means(
        im, h=0.04, patch_size=5, patch_distance=6, fast_mode=True, preserve_range=True)),
    ("invert", lambda im: 1 - im),
    ("stretch:low=2,high=98", lambda im: exposure.rescale_intensity(
        im, in_range=tuple(np.percentile(im, (2, 98))), out_range=(0.0, 1.0))),
    ("rescale:factor=0.5", lambda im: transform.rescale(im, 0.5, order=1, anti_aliasing=True, preserve_range=True)),
    ("resize:width=32", lambda im: transform.resize(im, (32, 32), order=1, anti_aliasing=True, preserve_range=True)),
])
def test_ops_equal_direct_scikit_image_calls(spec, direct, image):
    got = run(spec, image)
    want = direct(image)
    assert got.shape == want.shape and got.dtype == (bool if want.dtype == bool else np.float32)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_every_op_runs_on_gray_and_rgb(image):
    rgb = np.stack([image, image * 0.5, image * 0.2], -1)
    for name in OPS:
        spec = "resize:width=10" if name == "resize" else name
        for im in (image, rgb):
            out = run(spec, im)
            assert out.shape[:2] == (run(spec, image).shape[:2]), name


def test_crop_cuts_data_bar(image):
    out = run("crop:bottom=10,left=2", image)
    assert out.shape == (54, 62)
    np.testing.assert_array_equal(out, image[:54, 2:])
    with pytest.raises(OpError, match=r"op 'crop': .* leaves nothing of a 64x64 image"):
        run("crop:bottom=64", image)


def test_binary_output_feeds_next_op(image):
    out = run("threshold|gaussian:sigma=1", image)
    assert out.dtype == np.float32 and 0 < out.mean() < 1


@pytest.mark.parametrize("spec,message", [
    ("gaussian:sigma=0", r"op 'gaussian': parameter 'sigma' must be a number in \(0, 100\], got '0'"),
    ("median:radius=abc", r"op 'median': parameter 'radius' must be an integer in \[1, 50\]"),
    ("threshold:method=magic", r"op 'threshold': parameter 'method' must be one of otsu, li, yen"),
    ("canny:low=0.3,high=0.1", r"op 'canny': 'low' \(0.3\) must not exceed 'high' \(0.1\)"),
    ("canny:quantile=true,high=5", r"op 'canny': with quantile=true, 'high' must be in \[0, 1\]"),
    ("laplace:ksize=4", r"op 'laplace': parameter 'ksize' must be odd"),
    ("stretch:low=60,high=40", r"op 'stretch': 'low' \(60\) must be below 'high' \(40\)"),
    ("resize", r"op 'resize': give 'width', 'height' or both"),
    ("blur", r"unknown op 'blur' \(ops: canny, .*\)"),
    ("gaussian:sigma", r"op 'gaussian': expected key=value"),
    ("gaussian:sigma=1,sigma=2", r"op 'gaussian': sigma is given twice \(1 and 2\); give it once"),
    ("gaussian:radius=1", r"op 'gaussian': unknown parameter 'radius' \(parameters: sigma\)"),
    ("denoise:h=0.1", r"op 'denoise': parameter 'h' applies to method=nlm only"),
])
def test_invalid_parameters_named_up_front(spec, message):
    with pytest.raises(PipelineError, match=message):
        Pipeline.parse(spec)


def test_pipeline_parse_forms_agree_and_json_round_trip():
    a = Pipeline.parse(["gaussian:sigma=1.5", "canny:sigma=2,low=0.1,high=0.3"])
    b = Pipeline.parse("gaussian:sigma=1.5|canny:sigma=2,low=0.1,high=0.3")
    assert a == b
    assert Pipeline.from_json(a.to_json()) == a
    assert str(a) == "gaussian:sigma=1.5|canny:high=0.3,low=0.1,sigma=2"
    assert Pipeline.parse(str(a)) == a
    assert a.binary_output and not Pipeline.parse("gaussian").binary_output
    assert a.to_list()[1] == {"op": "canny", "params": {"high": 0.3, "low": 0.1, "quantile": False, "sigma": 2.0}}


def test_pipeline_json_errors():
    with pytest.raises(PipelineError, match="cannot be parsed"):
        Pipeline.from_json("{nope")
    with pytest.raises(PipelineError, match="must be a list of"):
        Pipeline.from_json('[{"name": "gaussian"}]')


def test_step_defaults_are_resolved():
    assert Step.parse("gaussian").params == {"sigma": 1.0}
    assert str(Step.parse("gaussian:sigma=1")) == "gaussian"


def test_unsharp_on_colour_matches_per_channel_grayscale():
    rng = np.random.default_rng(4)
    rgb = rng.random((24, 40, 3)).astype(np.float32)
    out = Pipeline.parse("unsharp:radius=1.5,amount=2").apply(rgb)
    gray = np.stack([Pipeline.parse("unsharp:radius=1.5,amount=2").apply(rgb[..., c]) for c in range(3)], -1)
    np.testing.assert_allclose(out, gray, atol=1e-5)


def test_nlm_with_automatic_strength_estimates_the_noise():
    from microcli.preprocess.ops import _noise_sigma

    rng = np.random.default_rng(5)
    noisy = np.clip(0.5 + rng.normal(0, 0.05, (96, 96)), 0, 1).astype(np.float32)
    assert _noise_sigma(noisy) == pytest.approx(0.05, rel=0.15)
    assert Pipeline.parse("denoise:method=nlm").apply(noisy).std() < 0.5 * noisy.std()


def test_canny_threshold_against_the_automatic_other_one_is_a_pipeline_error():
    with pytest.raises(PipelineError, match=r"'low' \(0\.1, automatic\) must not exceed 'high' \(0\.05\)"):
        Pipeline.parse("canny:high=0.05")
    Pipeline.parse("canny:high=0.5")
