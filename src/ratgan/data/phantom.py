"""The built-in cohort: procedural T2*-weighted EPI scans of rat heads with GM/WM/CSF labels.

A stand-in for the SIGMA cohort (docs/method.md §1) that anyone can generate: 64 x 64 x 40 voxels
of 0.375 x 0.375 x 0.5 mm, magnitude images as a surface coil on top of the head sees them, and
tissue labels (0 background, 1 GM, 2 WM, 3 CSF) drawn from the same geometry.

Each subject is drawn in three steps (docs/phantom.md describes the model and its parameters):

1. ``sample_params`` draws the subject's anatomy and acquisition from a seeded generator.
2. Every voxel is mapped to the anatomical point it images: scanner position -> EPI shift along
   the phase-encode axis -> inverse head pose -> smooth random deformation -> brain scale.
3. Smooth analytic shapes (ellipsoids, superellipsoids, tubes) evaluated at those points give a
   region map (labels and tissue types), which becomes a magnitude image after texture, blurring,
   coil sensitivity, a Nyquist (N/2) ghost and complex Gaussian noise.

Hand-written because no maintained library synthesises rodent EPI; it uses numpy and
scipy.ndimage only and writes files through ``ratgan.data.io``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ratgan.arrays import BoolArray, FloatArray, IntArray
from ratgan.atomic import atomic_write_json, fsync_dir, leftovers
from ratgan.errors import RatganError

SHAPE = (64, 64, 40)
"""Voxels of a scan: left-right, ventral-dorsal (phase encoding), caudal-rostral (slices)."""
ZOOMS = (0.375, 0.375, 0.5)
"""Voxel size in mm, as in the SIGMA EPI scans."""
LABELS = {0: "background", 1: "GM", 2: "WM", 3: "CSF"}
"""Label values of the label maps."""

TISSUE_FRACTION_RANGES = {
    "brain": (0.11, 0.19),
    "GM": (0.66, 0.80),
    "WM": (0.08, 0.13),
    "CSF": (0.11, 0.23),
}
"""Documented ranges of tissue fractions: ``brain`` is labelled voxels / all voxels, each tissue
is its voxels / labelled voxels.  Every generated subject lies inside them (docs/phantom.md)."""

# Anatomical frame (mm): x left -> right, y ventral -> dorsal, z caudal -> rostral, origin near
# the middle of the brain.  The scanner frame of the affine is RAS as a rat lying prone, head
# first, appears in a horizontal-bore scanner: x = R, y ("A") = dorsal, z ("S") = rostral, which
# is what the SIGMA EPI headers hold and why the acquired slices display as axial.

# Region codes of the intensity model (labels follow from them through _REGION_LABEL).
AIR, SKIN, SCALP, MUSCLE, BODY, BONE, EYE, LENS = range(8)
CORTEX, STRIATUM, THALAMUS, HIPPOCAMPUS, OLFACTORY, CEREBELLUM, BRAINSTEM, WM, CSF = range(10, 19)
_N_REGIONS = 19
_REGION_LABEL = np.zeros(_N_REGIONS, np.uint8)
_REGION_LABEL[[CORTEX, STRIATUM, THALAMUS, HIPPOCAMPUS, OLFACTORY, CEREBELLUM, BRAINSTEM]] = 1
_REGION_LABEL[WM] = 2
_REGION_LABEL[CSF] = 3


@dataclass
class PhantomParams:
    """Per-subject anatomy and acquisition of one phantom scan (lengths in mm, angles in degrees).

    Signals are in relative units (cortex about 0.6) before the coil profile; ``gain`` turns
    them into scanner units.  ``field_seed`` seeds the random fields (deformation, B0 inhomogeneity,
    tissue texture, noise), so a ``PhantomParams`` fully determines its scan.
    """

    rotation_deg: tuple[float, float, float]
    """Head rotation about the x (pitch), y (yaw) and z (roll) axes."""
    translation_mm: tuple[float, float, float]
    """Head position relative to the centre of the field of view."""
    brain_scale: float
    """Overall linear size of the head and brain (1 = the template, about 15 mm wide)."""
    axis_scale: tuple[float, float, float]
    """Extra linear size along x, y, z (shape variation)."""
    olfactory_scale: float
    """Linear size of the olfactory bulbs."""
    cerebellum_scale: float
    """Linear size of the cerebellum."""
    hippocampus_scale: float
    """Thickness factor of the hippocampus."""
    ventricle_scale: float
    """Thickness factor of the ventricles (their volume varies most)."""
    cortex_thickness: float
    """Depth of the cortical grey matter above the corpus callosum."""
    wm_thickness: float
    """Thickness of the corpus callosum and external capsule."""
    csf_thickness: float
    """Thickness of the subarachnoid CSF around the dorsal brain (thicker ventrally)."""
    skull_thickness: float
    """Thickness of the dorsal skull (thicker at the skull base)."""
    scalp_thickness: float
    """Soft tissue between the dorsal skull and the skin surface."""
    head_width: float
    """Half-width of the head at the ears."""
    deformation_mm: float
    """RMS amplitude of the smooth random deformation of each coordinate."""
    gm: float
    """Cortical grey-matter signal; the other brain regions are relative to it."""
    wm_ratio: float
    """White matter / grey matter signal."""
    csf_ratio: float
    """CSF / grey matter signal (T2*-weighted: CSF brightest)."""
    deep_gm_ratio: float
    """Striatum and thalamus / cortex signal."""
    muscle: float
    """Signal of the temporal muscles beside the skull."""
    scalp: float
    """Signal of the soft tissue over the skull."""
    skin: float
    """Skin and subcutaneous tissue signal."""
    coil_radius: float
    """Radius of the surface coil loop: sets how fast the signal falls with depth."""
    coil_height: float
    """Height of the coil plane above the centre of the field of view (dorsal)."""
    coil_offset: tuple[float, float]
    """Coil centre offset along x and z."""
    distortion_px: float
    """Largest EPI shift along the phase-encode axis (voxels), near the ear canals and sinuses."""
    ghost: float
    """Amplitude of the N/2 ghost relative to the image."""
    noise: float
    """Standard deviation of the complex noise relative to the gain (the SNR is about 1/noise)."""
    gain: float
    """Scanner units of unit relative signal at the coil."""
    field_seed: int
    """Seed of the random fields of this subject."""


def _triple(values: FloatArray) -> tuple[float, float, float]:
    """Three drawn values as Python floats."""
    a, b, c = (float(v) for v in values)
    return a, b, c


def _pair(values: FloatArray) -> tuple[float, float]:
    """Two drawn values as Python floats."""
    a, b = (float(v) for v in values)
    return a, b


def sample_params(rng: np.random.Generator) -> PhantomParams:
    """Draw one subject's parameters; volumes vary with a CV of about 4% (docs/method.md §1)."""

    def normal(mean: float, sd: float, lo: float, hi: float) -> float:
        return float(np.clip(rng.normal(mean, sd), lo, hi))

    return PhantomParams(
        rotation_deg=_triple(rng.normal(0, (2.5, 1.5, 1.5)).clip(-6, 6)),
        translation_mm=_triple(rng.normal(0, (0.35, 0.45, 0.6)).clip(-1.5, 1.5)),
        brain_scale=normal(1.0, 0.009, 0.96, 1.04),
        axis_scale=_triple(rng.normal(1.0, 0.006, 3).clip(0.975, 1.025)),
        olfactory_scale=normal(1.0, 0.02, 0.92, 1.08),
        cerebellum_scale=normal(1.0, 0.012, 0.95, 1.05),
        hippocampus_scale=normal(1.0, 0.03, 0.88, 1.12),
        ventricle_scale=normal(1.0, 0.08, 0.75, 1.3),
        cortex_thickness=normal(1.75, 0.06, 1.55, 1.95),
        wm_thickness=normal(0.62, 0.03, 0.52, 0.72),
        csf_thickness=normal(0.28, 0.03, 0.2, 0.36),
        skull_thickness=normal(0.45, 0.05, 0.33, 0.6),
        scalp_thickness=normal(1.4, 0.15, 1.0, 1.9),
        head_width=normal(10.2, 0.35, 9.2, 11.2),
        deformation_mm=normal(0.16, 0.03, 0.08, 0.25),
        gm=normal(0.62, 0.02, 0.55, 0.69),
        wm_ratio=normal(0.56, 0.03, 0.46, 0.66),
        csf_ratio=normal(2.0, 0.12, 1.6, 2.4),
        deep_gm_ratio=normal(0.7, 0.03, 0.6, 0.8),
        muscle=normal(0.5, 0.04, 0.4, 0.6),
        scalp=normal(0.2, 0.03, 0.12, 0.28),
        skin=normal(0.15, 0.03, 0.08, 0.22),
        coil_radius=float(rng.uniform(8.5, 11.0)),
        coil_height=float(rng.uniform(8.8, 9.8)),
        coil_offset=_pair(rng.normal(0, 0.8, 2).clip(-2, 2)),
        distortion_px=float(rng.uniform(0.6, 1.6)),
        ghost=float(rng.uniform(0.01, 0.035)),
        noise=float(rng.uniform(0.006, 0.014)),
        gain=float(rng.uniform(3000.0, 4000.0)),
        field_seed=int(rng.integers(0, 2**63 - 1)),
    )


def phantom_affine() -> FloatArray:
    """The RAS voxel-to-mm affine of every phantom scan: axis-aligned, centred on (0, 0, 0)."""
    affine = np.diag([*ZOOMS, 1.0])
    affine[:3, 3] = -(np.array(SHAPE) - 1) / 2 * np.array(ZOOMS)
    return affine


def subject_seed(seed: int, index: int) -> int:
    """The seed of subject ``index`` of a cohort drawn with ``seed`` (independent of its size)."""
    state = np.random.SeedSequence(entropy=seed, spawn_key=(index,)).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def make_subject(seed: int) -> tuple[FloatArray, IntArray, FloatArray]:
    """One phantom subject: image (float32, 64x64x40), labels (uint8, same shape), affine (4x4)."""
    return render(sample_params(np.random.default_rng(seed)))


# --------------------------------------------------------------------------- shapes
# Each shape returns a "level": < 1 inside, > 1 outside.  ``d`` grows every semi-axis by ``d``
# mm (negative shrinks), which approximates a surface parallel to the original.


def _ellipsoid(
    p: Sequence[FloatArray],
    centre: Sequence[float],
    half: Sequence[float],
    d: float | FloatArray = 0.0,
) -> FloatArray:
    x, y, z = p
    level: FloatArray = (
        ((x - centre[0]) / (half[0] + d)) ** 2
        + ((y - centre[1]) / (half[1] + d)) ** 2
        + ((z - centre[2]) / (half[2] + d)) ** 2
    )
    return level


def _tube(
    p: Sequence[FloatArray], start: Sequence[float], end: Sequence[float], radius: float
) -> FloatArray:
    """Level of a capsule: (distance to the segment start-end / radius) squared."""
    a = np.asarray(start, np.float32)
    ab = np.asarray(end, np.float32) - a
    px, py, pz = p[0] - a[0], p[1] - a[1], p[2] - a[2]
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / float(ab @ ab), 0.0, 1.0)
    level: FloatArray = (
        (px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2
    ) / radius**2
    return level


class _Cerebrum:
    """The cerebral hemispheres: a superellipsoid whose width and height change along z.

    Widest (about 15 mm) over the temporal lobes, narrowing to the frontal pole; flatter on top
    than below, with a shallow midline groove.
    """

    ZC, C = 1.0, 6.6  # centre and half-length along z
    A, Z_WIDEST = 7.35, -1.5  # largest half-width and where it is
    B_UP, B_DOWN = 5.0, 5.6  # half-height above and below the centre
    N, NZ = 2.5, 3.0  # superellipse exponents (across, along z): boxier than an ellipsoid

    def __init__(self, p: Sequence[FloatArray]) -> None:
        x, y, z = p
        zf = np.clip((z - self.Z_WIDEST) / 8.5, 0.0, 1.0)
        zb = np.clip((self.Z_WIDEST - z) / 4.5, 0.0, 1.0)
        self.a = self.A * (1.0 - 0.42 * zf**2 - 0.14 * zb**2)
        front = np.clip((z - self.ZC) / self.C, 0.0, 1.0) ** 2
        up = y > 0
        groove = 1.0 - 0.08 * np.exp(-(x * x) / 0.6)
        self.b = np.where(
            up, self.B_UP * (1.0 - 0.22 * front) * groove, self.B_DOWN * (1.0 - 0.3 * front)
        )
        # ventral taper: the base of the brain is narrower than its top
        self.a = self.a * (1.0 - 0.2 * np.clip(-y / self.B_DOWN, 0.0, 1.0) ** 2)
        self.ax = np.abs(x)
        self.ay = np.abs(y)
        self.az = np.abs(z - self.ZC)

    def level(self, d: float | FloatArray = 0.0) -> FloatArray:
        """Level of the surface grown by ``d`` mm (a number or one value per point)."""
        n = self.N
        # np.maximum of two Python floats would be a float64 scalar and promote the sum
        c = np.maximum(self.C + d, 0.05) if isinstance(d, np.ndarray) else max(self.C + d, 0.05)
        level: FloatArray = (
            (self.ax / np.maximum(self.a + d, 0.05)) ** n
            + (self.ay / np.maximum(self.b + d, 0.05)) ** n
            + (self.az / c) ** self.NZ
        )
        return level


# --------------------------------------------------------------------------- rendering


def _rotation(deg: Sequence[float]) -> FloatArray:
    """Rotation matrix of angles (degrees) about x, then y, then z."""
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rotation: FloatArray = rz @ ry @ rx
    return rotation


def _smooth_noise(rng: np.random.Generator, sigma: float) -> FloatArray:
    """Gaussian white noise smoothed by ``sigma`` voxels, rescaled to unit standard deviation."""
    field: FloatArray = ndimage.gaussian_filter(
        rng.standard_normal(SHAPE, dtype=np.float32), sigma, mode="wrap"
    )
    return field / max(float(field.std()), 1e-6)


def _sinusoid_field(
    rng: np.random.Generator, p: Sequence[FloatArray], rms: float, n_waves: int = 4
) -> list[FloatArray]:
    """A smooth random displacement (3 arrays, mm) made of plane waves 10-25 mm long."""
    out = []
    for _ in range(3):
        comp = np.zeros(SHAPE, np.float32)
        for _ in range(n_waves):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            k = (direction * (2 * np.pi / rng.uniform(10.0, 25.0))).astype(np.float32)
            amp = rms * np.sqrt(2.0 / n_waves) * rng.normal()
            phase = rng.uniform(0, 2 * np.pi)
            comp += np.float32(amp) * np.sin(p[0] * k[0] + p[1] * k[1] + p[2] * k[2] + phase)
        out.append(comp)
    return out


def render(params: PhantomParams) -> tuple[FloatArray, IntArray, FloatArray]:
    """Render the scan described by ``params``: image, labels and affine as ``make_subject``."""
    rng = np.random.default_rng(params.field_seed)
    affine = phantom_affine()
    f32 = np.float32

    # Scanner coordinates (mm) of every voxel.
    idx = np.indices(SHAPE, dtype=f32)
    world = [idx[i] * f32(ZOOMS[i]) + f32(affine[i, 3]) for i in range(3)]

    # Inverse head pose, before EPI distortion.
    rot = _rotation(params.rotation_deg).astype(f32)
    rel = [world[i] - f32(params.translation_mm[i]) for i in range(3)]
    anat = [rel[0] * rot[0, i] + rel[1] * rot[1, i] + rel[2] * rot[2, i] for i in range(3)]

    # B0 inhomogeneity as a shift along the phase-encode axis (voxels): susceptibility near the
    # ear canals and the nasal sinus, plus a weak linear shim error.
    shift = (
        f32(rng.normal(0, 0.12)) * anat[2] / 10
        + f32(rng.normal(0, 0.12)) * anat[0] / 10
        + f32(rng.normal(0, 0.1))
    )
    for centre, width, sign in (
        ((5.5, -6.5, -7.0), 2.8, -1.0),
        ((-5.5, -6.5, -7.0), 2.8, -1.0),
        ((0.0, -4.5, 9.0), 3.0, 1.0),
    ):
        bump = np.exp(-0.5 * _ellipsoid(anat, centre, (width, width, width)))
        shift = shift + f32(sign * params.distortion_px * rng.uniform(0.7, 1.0)) * bump
    shift_mm = shift * f32(ZOOMS[1])
    # The voxel at scanner y shows the object at y + shift: move along the head's y direction.
    anat = [anat[i] + shift_mm * rot[1, i] for i in range(3)]

    # Smooth deformation, then the subject's size.
    disp = _sinusoid_field(rng, anat, params.deformation_mm)
    scale = [params.brain_scale * s for s in params.axis_scale]
    p = tuple((anat[i] + disp[i]) / f32(scale[i]) for i in range(3))
    region, labels = _anatomy(p, params)

    # Tissue intensities (relative to GM) and texture.
    gm = params.gm
    lut = np.zeros(_N_REGIONS, f32)
    lut[[SKIN, SCALP, MUSCLE, BODY, BONE, EYE, LENS]] = (
        params.skin,
        params.scalp,
        params.muscle,
        0.3 * params.muscle,
        0.04,
        1.1 * gm,
        0.1 * gm,
    )
    lut[[CORTEX, STRIATUM, THALAMUS, HIPPOCAMPUS, OLFACTORY, CEREBELLUM, BRAINSTEM]] = (
        gm,
        gm * params.deep_gm_ratio,
        gm * params.deep_gm_ratio * 0.9,
        gm * 0.8,
        gm * 0.9,
        gm * 0.85,
        gm * params.deep_gm_ratio * 0.85,
    )
    lut[WM] = gm * params.wm_ratio
    lut[CSF] = gm * params.csf_ratio
    texture_amp = np.full(_N_REGIONS, 0.06, f32)
    texture_amp[[SKIN, SCALP, MUSCLE]] = 0.15
    texture_amp[BODY] = 0.45
    texture_amp[[AIR, BONE]] = 0.0
    texture = _smooth_noise(rng, 1.2)
    obj = lut[region] * (1.0 + texture_amp[region] * texture)
    np.maximum(obj, 0.0, out=obj)

    # EPI point-spread (T2* blurring is widest along the phase-encode axis).
    obj = ndimage.gaussian_filter(obj, (0.65, 0.85, 0.45), mode="constant", truncate=3.0)

    # Pile-up and stretching along the phase-encode axis, and through-slice dephasing.
    jac = 1.0 + np.gradient(shift, axis=1)
    dephase = np.exp(-((np.gradient(shift, axis=2) * f32(2.2)) ** 2))
    obj = obj * np.clip(jac, 0.3, 3.0) * dephase

    # Surface coil on top of the head: loop sensitivity falling with depth and off-axis distance.
    depth = f32(params.coil_height) - world[1]
    off_x, off_z = (f32(v) for v in params.coil_offset)
    rho2 = (world[0] - off_x) ** 2 + (world[2] - off_z) ** 2
    r2 = f32(params.coil_radius**2)
    coil = (r2 / (r2 + depth * depth + 0.2 * rho2)) ** 1.5
    magnitude = obj * coil * f32(params.gain)

    # Complex image with a smooth phase, N/2 ghost along the phase-encode axis, complex noise.
    c = rng.normal(0, 0.06, 4).astype(f32)
    phase = c[0] * 10 + c[1] * world[0] + c[2] * world[1] + c[3] * world[2]
    re = magnitude * np.cos(phase)
    im = magnitude * np.sin(phase)
    g_phase = rng.uniform(0, 2 * np.pi)
    g_re, g_im = np.roll(re, SHAPE[1] // 2, axis=1), np.roll(im, SHAPE[1] // 2, axis=1)
    gc, gs = f32(params.ghost * np.cos(g_phase)), f32(params.ghost * np.sin(g_phase))
    re = re + gc * g_re - gs * g_im
    im = im + gs * g_re + gc * g_im
    sigma = f32(params.noise * params.gain)
    re += sigma * rng.standard_normal(SHAPE, dtype=f32)
    im += sigma * rng.standard_normal(SHAPE, dtype=f32)
    image = np.sqrt(re * re + im * im).astype(f32)
    return image, labels, affine


def _anatomy(p: Sequence[FloatArray], params: PhantomParams) -> tuple[IntArray, IntArray]:
    """Region codes and labels (0 bg, 1 GM, 2 WM, 3 CSF) at anatomical points ``p`` (mm)."""
    x, y, z = p
    ax = np.abs(x)
    pa = (ax, y, z)  # mirror-symmetric structures are written for the right side only
    ct, wt = params.cortex_thickness, params.wm_thickness
    vs, hs = params.ventricle_scale, params.hippocampus_scale

    cereb = _Cerebrum(p)
    cb_s, ob_s = params.cerebellum_scale, params.olfactory_scale

    def cerebellum_level(d: float | FloatArray = 0.0) -> FloatArray:
        return _ellipsoid(p, (0.0, -0.4, -8.7), (5.3 * cb_s, 3.9 * cb_s, 3.5 * cb_s), d)

    def others_level(d: float | FloatArray = 0.0) -> FloatArray:
        ob = _ellipsoid(
            (ax, y + 0.3 * (z - 8.6), z), (1.45, -0.9, 8.6), (1.4 * ob_s, 1.9 * ob_s, 2.7 * ob_s), d
        )
        mid = _ellipsoid(p, (0.0, -1.0, -4.2), (4.2, 3.6, 2.8), d)
        stem = _ellipsoid(p, (0.0, -3.7, -7.5), (2.8, 2.1, 6.5), d)
        pons = _ellipsoid(p, (0.0, -4.6, -5.0), (2.5, 1.4, 1.9), d)
        level: FloatArray = np.minimum(np.minimum(ob, mid), np.minimum(stem, pons))
        return level

    cer0 = cereb.level()
    cbl0 = cerebellum_level()
    oth0 = others_level()
    brain = (cer0 < 1) | (cbl0 < 1) | (oth0 < 1)

    # Outer layers: CSF (thicker towards the ventral cisterns), skull (thicker at the base).
    ventral = np.clip(-y / 5.0, 0.0, 1.0)
    d_csf = params.csf_thickness * (1.0 + 0.8 * ventral)
    d_bone = d_csf + params.skull_thickness * (1.0 + 0.8 * ventral)

    def inside(d: float | FloatArray) -> BoolArray:
        return (cereb.level(d) < 1) | (cerebellum_level(d) < 1) | (others_level(d) < 1)

    inside_csf, inside_bone = inside(d_csf), inside(d_bone)

    # Head: a superellipse in cross-section, narrower towards the snout; skin on its surface.
    top = _Cerebrum.B_UP + params.csf_thickness + params.skull_thickness + params.scalp_thickness
    hy_c, hy = -4.5, top + 4.5
    hx = params.head_width * (1.0 - 0.22 * np.clip((z + 2.0) / 12.0, 0.0, 1.0) ** 2)
    hn = 2.6
    head_l = np.abs(x / hx) ** hn + np.abs((y - hy_c) / hy) ** hn
    head = head_l < 1
    skin = head & (np.abs(x / (hx - 0.45)) ** hn + np.abs((y - hy_c) / (hy - 0.45)) ** hn >= 1)

    region = np.full(x.shape, AIR, np.uint8)
    region[head] = SCALP
    region[head & (_ellipsoid(pa, (7.6, 2.0, -2.0), (3.4, 5.0, 8.0)) < 1)] = MUSCLE
    below = y < -6.0 - 1.0 * np.clip((z + 2.0) / 8.0, 0.0, 1.0)
    region[head & below] = BODY
    region[skin] = SKIN
    # Airways and ear cavities (dark), eyes (bright vitreous, dark lens).
    air = (
        (_tube(pa, (0.0, -9.0, -12.0), (0.0, -8.0, 12.0), 1.0) < 1)
        | (_ellipsoid(pa, (5.4, -6.8, -7.0), (2.1, 2.3, 2.5)) < 1)
        | (
            (_ellipsoid(pa, (0.0, -5.2, 11.0), (2.0, 2.4, 4.5)) < 1)
            & (np.cos(2.6 * y + 1.3 * ax) < 0.3)
        )
    )
    region[air & head] = AIR
    eye = _ellipsoid(pa, (6.0, -0.6, 10.6), (2.7, 2.7, 2.7)) < 1
    region[eye] = EYE
    region[eye & (_ellipsoid(pa, (7.4, -0.6, 12.0), (1.6, 1.8, 1.6)) < 1)] = LENS
    region[inside_bone] = BONE
    region[inside_csf] = CSF

    # Brain: grey matter, then deeper structures, then white matter, then CSF spaces.
    region[brain] = BRAINSTEM
    region[cbl0 < 1] = CEREBELLUM
    region[(oth0 < 1) & (z > 5.5)] = OLFACTORY
    in_cer = cer0 < 1
    region[in_cer] = CORTEX
    below_ctx = cereb.level(-ct) < 1
    below_wm = cereb.level(-(ct + wt)) < 1
    deep = in_cer & below_wm
    region[deep] = THALAMUS  # with the hypothalamus and the rest of the diencephalon
    region[deep & (z > -0.9)] = STRIATUM

    # Hippocampus: a curved slab under the corpus callosum, dorsal at its rostral end and
    # sweeping ventrally towards its caudal end.
    hip_depth = ct + wt + 0.35 * vs
    hip_t = 2.0 * hs
    zc = np.clip((-0.8 - z) / 4.4, 0.0, 1.0)
    hip_zone = (z < -0.8) & (z > -5.4) & (ax > 0.45) & (y > 1.0 - 5.5 * zc**1.3)
    hippo = (
        in_cer & (cereb.level(-hip_depth) < 1) & (cereb.level(-(hip_depth + hip_t)) >= 1) & hip_zone
    )
    region[hippo] = HIPPOCAMPUS

    # White matter: corpus callosum / external capsule (a sheet under the cortex), internal
    # capsule and cerebral peduncles, olfactory and brainstem tracts, cerebellar arbor vitae.
    wm_zone = (np.abs(z - 0.2) < 4.7) & (y > -2.6)
    wm = in_cer & below_ctx & ~below_wm & wm_zone
    wm |= _tube(pa, (2.5, 1.2, 1.5), (3.5, -3.3, -2.0), 0.45) < 1
    wm |= _tube(pa, (3.5, -3.3, -2.0), (1.7, -4.9, -5.8), 0.42) < 1
    wm |= _tube(pa, (0.8, -5.1, -5.8), (0.7, -5.3, -12.0), 0.45) < 1
    wm |= _ellipsoid((ax, y + 0.3 * (z - 8.6), z), (1.45, -0.9, 8.3), (0.45, 0.6, 2.0)) < 1
    rc = np.sqrt(np.maximum(cbl0, 0.0))
    theta = np.arctan2(y + 1.2, z + 8.4)
    folia = np.cos(11.0 * theta)
    cb_in = cbl0 < 1
    wm |= cb_in & ((rc < 0.4) | ((rc < 0.8) & (folia > 0.8)))
    region[wm & brain] = WM

    # CSF: lateral ventricles (thin tilted slits beside the septum, then a thin layer over the
    # hippocampus), third ventricle, aqueduct, fourth ventricle, midline fissure, cerebellar sulci.
    u = (ax - 1.75) * 0.89 + (y - 1.55) * 0.45  # across the slit
    v = -(ax - 1.75) * 0.45 + (y - 1.55) * 0.89  # along it, up and towards the midline
    csf = ((u / (0.22 * vs)) ** 2 + (v / 1.25) ** 2 + ((z - 1.3) / 1.6) ** 2) < 1
    csf |= (
        in_cer
        & below_wm
        & (cereb.level(-(ct + wt + 0.35 * vs)) >= 1)
        & (_ellipsoid(pa, (2.6, 1.5, -2.4), (2.1, 3.0, 1.9)) < 1)
    )
    csf |= (ax < 0.12 * np.sqrt(vs)) & ((((z + 1.8) / 2.0) ** 2 + ((y + 2.0) / 2.8) ** 2) < 1)
    csf |= _tube(pa, (0.0, -0.3, -4.0), (0.0, -1.3, -7.0), 0.28 * vs) < 1
    csf |= _ellipsoid(p, (0.0, -2.0, -8.3), (1.1 * vs, 0.4 * vs, 1.5)) < 1
    csf |= in_cer & (ax < 0.12) & ~below_ctx & (y > 0)
    csf |= cb_in & (rc > 0.82) & (np.cos(11.0 * theta + np.pi) > 0.9)
    region[csf & brain] = CSF

    return region, _REGION_LABEL[region]


# --------------------------------------------------------------------------- cohort


PHANTOM_NAME = re.compile(r"sub-\d{3,}\.nii\.gz")
"""The names of the files the phantom writes in ``images/`` and ``labels/``."""


def write_cohort(out: Path, subjects: int, seed: int, progress: bool = True) -> list[Path]:
    """Write ``subjects`` phantom scans as ``out/images/sub-XXX.nii.gz`` with label maps of the
    same names in ``out/labels``; return the image paths.

    Subject ``i`` depends only on ``(seed, i)``, so a larger cohort extends a smaller one.
    ``out/phantom.json`` records the seed and every subject's parameters.  The cohort is
    written all or nothing: it is rendered into a hidden staging folder in ``out`` and only
    then swapped in, whole folders at a time (:func:`_swap_in`), so an interruption leaves the
    previous cohort complete, or ``images/`` (and perhaps ``labels/``) missing, or the new
    cohort complete without ``phantom.json``: never part of a cohort, nor two mixed.  An
    ``out`` whose ``images/`` or ``labels/`` holds anything the phantom does not write, other
    than hidden files, is refused (:func:`check_out`).
    """
    from ratgan.data.io import write_nifti

    if subjects < 1:
        raise ValueError(f"subjects must be at least 1, got {subjects}")
    if seed < 0:
        raise ValueError(f"seed must not be negative, got {seed}")
    out = Path(out)
    check_out(out)
    width = max(3, len(str(subjects - 1)))
    names = [f"sub-{i:0{width}d}.nii.gz" for i in range(subjects)]
    out.mkdir(parents=True, exist_ok=True)
    for leftover in leftovers(out, "phantom"):  # what a killed run left: its staging folder
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".phantom.", suffix=".tmp", dir=out))
    try:
        for folder in ("images", "labels"):
            (staging / folder).mkdir()
        records = []
        indices: Iterable[int] = range(subjects)
        if progress:
            from tqdm import tqdm

            indices = tqdm(indices, desc="phantom", unit="subject")
        for i in indices:
            s = subject_seed(seed, i)
            params = sample_params(np.random.default_rng(s))
            image, labels, affine = render(params)
            name = names[i]
            write_nifti(staging / "images" / name, image, affine, zooms=ZOOMS, dtype=np.float32)
            write_nifti(staging / "labels" / name, labels, affine, zooms=ZOOMS, dtype=np.uint8)
            records.append({"file": name, "seed": s, "params": dataclasses.asdict(params)})
        manifest = {
            "generator": "ratgan.data.phantom",
            "seed": seed,
            "subjects": subjects,
            "shape": list(SHAPE),
            "zooms": list(ZOOMS),
            "labels": LABELS,
            "scans": records,
        }
        atomic_write_json(staging / "phantom.json", manifest, indent=1)
        _swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / "images" / name for name in names]


def check_out(out: Path) -> None:
    """Refuse an output folder whose ``images/`` or ``labels/`` holds anything but the
    phantom's own files and hidden ones: the cohort replaces those folders whole, so another
    scan would be deleted, and leaving it in place would make it part of the cohort."""
    for folder in ("images", "labels"):
        if not (Path(out) / folder).is_dir():
            continue
        for path in sorted((Path(out) / folder).iterdir()):
            hidden = path.name.startswith(".")  # never read as a scan (list_scans)
            if not hidden and not (PHANTOM_NAME.fullmatch(path.name) and path.is_file()):
                raise RatganError(
                    f"output folder {out} holds {path}, which the phantom did not write; "
                    "choose another --out or move it away."
                )


def _swap_in(staging: Path, out: Path) -> None:
    """Replace the cohort in ``out`` by the complete one in ``staging``, folder by folder.

    ``phantom.json`` goes first and comes back last; both old folders leave before the new
    ones come in, ``labels/`` before ``images/``.  Each step is one rename, so whenever the
    run stops, ``out/images`` is either the old cohort's, absent, or the new cohort's, and
    ``labels/`` beside an ``images/`` is of the same cohort.  Hidden files (system metadata)
    are carried into the new folders first.
    """
    (out / "phantom.json").unlink(missing_ok=True)
    fsync_dir(out)
    retired = staging / "previous"
    retired.mkdir()
    for folder in ("images", "labels"):
        if (out / folder).is_dir():
            for hidden in (out / folder).glob(".*"):
                os.replace(hidden, staging / folder / hidden.name)
            os.replace(out / folder, retired / folder)
    fsync_dir(out)
    for folder in ("labels", "images"):
        os.replace(staging / folder, out / folder)
    fsync_dir(out)
    os.replace(staging / "phantom.json", out / "phantom.json")
    fsync_dir(out)
