"""`check-weights`: every expected file, found or missing, with its key coverage."""
from ..models.image_encoder import load_image_encoder
from ..models.keypoints import MotionExtractor
from ..models.loader import (OPTIONAL_BUFFERS, PERSONALIVE_FILES, build_denoising_unet, build_reference_unet,
                     denoising_state_dict, expected_listing, find_layout)
from ..models.motion import MotEncoder
from ..models.pose_guider import PoseGuider
from ..models.vae import load_vae
from ..models.weights import WeightsError, coverage, read_state_dict

SIMPLE = {"pose_guider": PoseGuider, "motion_encoder": MotEncoder, "motion_extractor": MotionExtractor}


def _check_simple(cls, path):
    sd = read_state_dict(path)
    module = cls(**cls.config_from_state_dict(sd))
    missing, unexpected, wrong = coverage(module, sd, OPTIONAL_BUFFERS)
    if missing or unexpected or wrong:
        raise WeightsError(f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} wrong-shape keys")
    return f"{len(sd)} keys, complete"


def _checks(layout):
    p = layout.personalive
    yield "personalive/denoising_unet + temporal_module", lambda: _check_denoising(layout)
    yield "personalive/reference_unet", lambda: _count(build_reference_unet(read_state_dict(p["reference_unet"]), p["reference_unet"]))
    for name, cls in SIMPLE.items():
        yield f"personalive/{name}", lambda cls=cls, name=name: _check_simple(cls, p[name])
    yield "image encoder", lambda: _count(load_image_encoder(layout.image_encoder))
    yield "vae", lambda: _count(load_vae(layout.vae))


def _count(module):
    return f"{len(module.state_dict())} keys, complete"


def _check_denoising(layout):
    sd, source = denoising_state_dict(layout)
    return _count(build_denoising_unet(sd, source, layout.base_unet))


def report(root):
    """(ok, lines): one line per expected file, then one per component's key coverage."""
    try:
        layout = find_layout(root)
    except WeightsError as e:
        return False, [f"error: {e}"]
    lines, ok = [], True
    for name in PERSONALIVE_FILES:
        path = layout.personalive[name]
        lines.append(f"{'found  ' if path else 'MISSING'} personalive/{name}: {path or '-'}")
        ok &= bool(path)
    for what, path in (("image encoder", layout.image_encoder), ("vae", layout.vae)):
        lines.append(f"{'found  ' if path else 'MISSING'} {what}: {path or '-'}")
        ok &= bool(path)
    if not ok:
        lines.append(expected_listing(root))
        return False, lines
    for what, check in _checks(layout):
        try:
            lines.append(f"ok      {what}: {check()}")
        except (WeightsError, ValueError, KeyError) as e:
            lines.append(f"BAD     {what}: {e}")
            ok = False
    return ok, lines
