"""Warp a reference image by the head model's motion.

Each output pixel the head covers takes the same surface point of the head model in the reference
(same face, same barycentric weights, the reference's pose and camera) and looks up the
reference's colour there. A point is visible when nothing nearer hides it in the reference.
`fill_warp` completes a warp into a whole frame: the reference's background with its head region
inpainted, the warped head over it, and the head pixels the reference does not see inpainted
(OpenCV Telea). That frame is the mesh-warp baseline (onehead.evaluation.baselines) and the base
that a warp-correcting Animator corrects (GaussianDiffusionConfig.correct_warp).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from onehead.camera import project
from onehead.errors import ConfigError
from onehead.head.geometry import similarity_transform
from onehead.pixels import frames_to_uint8
from onehead.render.rasterize import Fragments, interpolate, rasterize_mesh


@dataclass
class Warp:
    image: torch.Tensor  # (N, 3, H, W) the reference's colours where visible, 0 elsewhere
    visible: torch.Tensor  # (N, 1, H, W) 1 where the head covers the pixel and the reference sees it
    covered: torch.Tensor  # (N, 1, H, W) 1 where the head covers the pixel
    reference_covered: torch.Tensor  # (N, 1, H, W) 1 where the head covers the reference
    grid: torch.Tensor  # (N, H, W, 2) where each covered pixel samples the reference (grid_sample's
    # [-1, 1] coordinates); the pixel's own position elsewhere
    forward: torch.Tensor | None = None  # (N, H, W, 2) the other way: where each pixel the head
    # covers in the reference lands in the output (same coordinates), the pixel's own position
    # elsewhere; made only when asked (warp_reference's `forward`, what carry_foreground needs)


def warp_reference(reference: torch.Tensor, faces: torch.Tensor, reference_vertices: torch.Tensor,
                   reference_K: torch.Tensor, reference_world_to_cam: torch.Tensor, vertices: torch.Tensor,
                   K: torch.Tensor, world_to_cam: torch.Tensor, depth_tolerance: float = 0.01,
                   forward: bool = False) -> Warp:
    """reference (1 or N, 3, H, W) with its posed mesh (1 or N, V, 3) and camera ((3, 3) and (4, 4),
    or batched like the mesh); the output mesh (N, V, 3) and camera. A single reference is rasterized
    once and shared by the N outputs. forward: also make Warp.forward."""
    height, width = reference.shape[-2:]
    count = vertices.shape[0]
    with torch.no_grad():
        seen = rasterize_mesh(reference_vertices, faces, reference_K, reference_world_to_cam, height, width)
        fragments = rasterize_mesh(vertices, faces, K, world_to_cam, height, width)
        shared = reference_vertices if reference_vertices.shape[0] == count else reference_vertices[0]
        points = interpolate(fragments, faces, shared)  # (N, H, W, 3) on the reference's mesh
        pixels, depth = project(points.flatten(1, 2), reference_K, reference_world_to_cam)
        grid = torch.stack([(pixels[..., 0] + 0.5) / width, (pixels[..., 1] + 0.5) / height], -1) * 2 - 1
        grid = grid.view(-1, height, width, 2).to(reference.dtype)  # pixel centres at integers (onehead.camera)
        colours = F.grid_sample(reference.expand(count, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                                align_corners=False)
        seen_depth = F.grid_sample(seen.depth[:, None].to(reference.dtype).expand(count, -1, -1, -1), grid,
                                   mode="nearest", padding_mode="zeros", align_corners=False)
        covered = fragments.mask[:, None].to(reference.dtype)
        visible = covered * (seen_depth > 0) * (depth.view_as(seen_depth) <= seen_depth * (1 + depth_tolerance))
        reference_covered = seen.mask[:, None].to(reference.dtype).expand(count, -1, -1, -1)
        identity = _identity_grid(height, width, grid.device, grid.dtype)
        grid = torch.where(covered[:, 0, :, :, None] > 0, grid, identity)
        if not forward:
            return Warp(colours * visible, visible, covered, reference_covered, grid)
        if seen.face_index.shape[0] != count:  # one reference for N outputs
            seen_n = Fragments(*(t.expand(count, *t.shape[1:]) for t in (seen.face_index, seen.bary, seen.depth)))
        else:
            seen_n = seen
        landing = interpolate(seen_n, faces, vertices)  # (N, H, W, 3) the reference's surface points, moved
        landed, _ = project(landing.flatten(1, 2), K, world_to_cam)
        landing = torch.stack([(landed[..., 0] + 0.5) / width, (landed[..., 1] + 0.5) / height], -1) * 2 - 1
        landing = landing.view(-1, height, width, 2).to(reference.dtype)
        landing = torch.where(reference_covered[:, 0, :, :, None] > 0, landing, identity)
        return Warp(colours * visible, visible, covered, reference_covered, grid, landing)


MOUTH_INTERIOR = (58, 24, 24)  # uint8 RGB: the shadowed inside of an open mouth
INNER_LIPS = slice(60, 68)  # iBUG-68 inner lip contour


def fill_warp(reference: torch.Tensor, warp: Warp, inpaint_radius: int = 3,
              foreground: torch.Tensor | None = None, mouth: torch.Tensor | None = None,
              mouth_colours: torch.Tensor | None = None, carry=None,
              staying: torch.Tensor | None = None) -> torch.Tensor:
    """The whole frames (N, 3, H, W) in [0, 1] of a warp of `reference` (1 or N, 3, H, W) in [0, 1]:
    outside the head, the reference with its own head region inpainted; on the head, the warped
    reference, with the pixels the reference does not see inpainted and a moved silhouette's edge
    pixels blended with what lies behind (`antialiased`). 8-bit, like the images.

    foreground (1 or N, 1, H, W) in [0, 1], what of the reference moves beside the head (hair, a
    hat): it moves with the head too (`carry_foreground`), and the plate behind it and the head
    gets what lies around them mirrored in (`fill_mirrored`) instead of Telea: the backdrop above
    and beside the head, the torso beside the neck, never a collar reflected up into the head's
    place. Without it only the head model's surface moves.

    mouth (N, 1, H, W) in [0, 1], the inside of each output's mouth (`mouth_mask`): what of it the
    reference does not show is the dark MOUTH_INTERIOR, not lip colour inpainted inward, or
    mouth_colours (N, 3, H, W) in [0, 1] where given (`mouth_interior`: the reference's own).

    carry: what `carry_foreground(reference, warp, foreground)` returned, when the caller has it.
    staying (1 or N, 1, H, W) in {0, 1}: what of the person mask stays beside the head (another
    person, a raised shoulder): never mirrored into the plate, where a neighbour's face would show
    beside the moved head."""
    references = frames_to_uint8(reference)
    reference_moving = warp.reference_covered
    if foreground is not None:
        carried, reference_moving = carry or carry_foreground(reference, warp, foreground)
        carried_soft = carried[1][:, 0].cpu().numpy()
        carried_alpha = carried_soft > 0.5
        carried_colours = frames_to_uint8(carried[0])
    reference_moving = reference_moving[:, 0].cpu().numpy() > 0
    covered = warp.covered[:, 0].cpu().numpy() > 0
    holes = covered & (warp.visible[:, 0].cpu().numpy() == 0)
    warped = frames_to_uint8(warp.image)
    # how far each covered pixel moved, in pixels: a silhouette that stayed is the photo's own edge
    height, width = warp.grid.shape[1:3]
    identity = _identity_grid(height, width, warp.grid.device, warp.grid.dtype)
    scale = torch.tensor([width / 2, height / 2], dtype=warp.grid.dtype, device=warp.grid.device)
    moved_px = ((warp.grid - identity) * scale).norm(dim=-1).cpu().numpy()
    # the plate behind what moves: Telea for the head alone; for head and hair, what lies around
    # them mirrored in (the backdrop above and beside the head, the torso beside the neck)
    avoid = None if staying is None else staying[:, 0].cpu().numpy() > 0.5

    def plate(i):  # frame i's reference with what moves taken out and filled in
        image, hole = references[min(i, len(references) - 1)], reference_moving[min(i, len(reference_moving) - 1)]
        if foreground is None:
            return _inpaint(image, hole, inpaint_radius)
        return fill_mirrored(image, hole, avoid=None if avoid is None else avoid[min(i, len(avoid) - 1)])

    shared = len(references) == 1 and len(reference_moving) == 1 and (avoid is None or len(avoid) == 1)
    background = plate(0) if shared else None  # one plate, filled once
    out = []
    for i in range(len(warped)):
        frame = (background if shared else plate(i)).copy()
        if foreground is not None:
            carried_alpha[i] = without_specks(carried_alpha[i], covered[i])
            frame = _over(frame, carried_colours[i], soft_edge(carried_soft[i], carried_alpha[i]))
        hair_beside = ~covered[i] & (carried_alpha[i] if foreground is not None else False)
        frame = _over(frame, warped[i], antialiased(covered[i], hair_beside, moved_px[i]))
        gaps = seams_between(covered[i], carried_alpha[i]) if foreground is not None else False
        frame = _inpaint(frame, holes[i] | gaps, inpaint_radius)
        if mouth is not None:
            unseen = (holes[i] | ~covered[i]).astype(np.float32)
            weight = (mouth[i, 0].cpu().numpy() * unseen)[..., None]
            inside = (np.asarray(MOUTH_INTERIOR, np.float32) if mouth_colours is None
                      else mouth_colours[i].permute(1, 2, 0).cpu().numpy() * 255)
            frame = (frame * (1 - weight) + inside * weight + 0.5).astype(np.uint8)
        out.append(frame)
    frames = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255
    return frames.to(warp.image.device)


def _over(below: np.ndarray, above: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) `above` over `below` with alpha (H, W) in [0, 1]."""
    a = alpha[..., None]
    return (below * (1 - a) + above * a + 0.5).astype(np.uint8)


def soft_edge(alpha: np.ndarray, kept: np.ndarray, steepness: float = 3.0) -> np.ndarray:
    """(H, W) in [0, 1]: a carried foreground's soft alpha (H, W) steepened about 0.5, so its edge
    blends over a pixel or two instead of a hard stair, yet a faded part (a neck fading out) does
    not show through as a ghost; zero away from the kept pieces (`kept`, bool: alpha > 0.5 less
    `without_specks`)."""
    import cv2

    near_kept = cv2.dilate(kept.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2) > 0
    return np.clip((alpha - 0.5) * steepness + 0.5, 0, 1) * near_kept


def antialiased(covered: np.ndarray, continued: np.ndarray | bool = False,
                moved: np.ndarray | float = 1.0) -> np.ndarray:
    """(H, W) in [0, 1]: a rasterized mask (H, W, bool) with its edge pixels part-covered (less half
    the share of their 3x3 neighbourhood that is uncovered), so a warped head's silhouette is not a
    hard stair. Not where the uncovered side is `continued` (bool (H, W): the carried hair beside
    the head, which goes on the same picture rather than lying behind it), and in proportion to
    how far each pixel `moved` (pixels, up to 1): a silhouette that stayed is the photo's own edge."""
    import cv2

    behind = (~covered & ~np.asarray(continued, bool)).astype(np.float32)
    share = cv2.blur(behind, (3, 3), borderType=cv2.BORDER_REPLICATE)
    return covered * (1 - 0.5 * share * np.clip(moved, 0, 1))


def without_specks(carried: np.ndarray, head: np.ndarray, smallest: float = 0.005) -> np.ndarray:
    """(H, W) bool: the carried foreground less its loose specks, the pieces that touch neither the
    head nor anything larger than `smallest` of the image: stray wisps of a soft hair mask, and
    strands torn off where the carried hair's motion parts from the head's, which would float
    beside the moved head."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats((carried | head).astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= smallest * carried.size
    keep[np.unique(labels[head])] = True
    keep[0] = False  # the background label
    return carried & keep[labels]


def seams_between(head: np.ndarray, carried: np.ndarray, width: int = 7) -> np.ndarray:
    """(H, W) bool: the thin gaps (under `width` pixels) between the warped head (H, W) and the
    foreground carried beside it, where the two motions part (a turning head's scalp edge against
    its hair) and the plate behind would show through as an arc; they are inpainted from both sides."""
    import cv2

    person = (head | carried).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    return (cv2.morphologyEx(person, cv2.MORPH_CLOSE, kernel) > 0) & (person == 0)


def mouth_mask(landmarks68: torch.Tensor, height: int, width: int, soften: float = 1.0) -> torch.Tensor:
    """(N, 1, H, W) in [0, 1]: inside each frame's inner-lip contour (iBUG-68 points 60-67,
    (N, 68, 2) pixels), edges softened by a Gaussian of `soften` pixels."""
    import cv2

    masks = np.zeros((len(landmarks68), height, width), np.float32)
    for i, points in enumerate(landmarks68[:, INNER_LIPS].detach().cpu().numpy()):
        if np.isfinite(points).all():
            cv2.fillPoly(masks[i], [np.round(points * 4).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=2)
            if soften > 0:
                masks[i] = cv2.GaussianBlur(masks[i], (0, 0), soften)
    return torch.from_numpy(masks)[:, None]


def mouth_interior_colours(reference: torch.Tensor, reference_lips: torch.Tensor, lips: torch.Tensor,
                           open_ratio: float = 0.08, split_from: float = 1.0, split_over: float = 0.5) -> torch.Tensor:
    """What fills the unseen inside of each output's mouth, (N, 3, H, W) in [0, 1]: the reference's
    own mouth interior (its teeth, when its mouth is open), moved by the similarity that maps its
    inner lips onto the output's, and MOUTH_INTERIOR where that does not reach or where the
    reference's mouth is closed (the area inside its inner lips under `open_ratio` of the squared
    mouth width; the astronaut's smile with teeth is 0.14, Grace Hopper's closed mouth 0.04).

    Where the output's mouth opens wider than `split_from` times the reference's, the interior
    parts: its upper half goes with the upper inner lip and its lower half with the lower (each by
    the similarity of its half of the contour), so the upper teeth stay under the upper lip, the
    lower teeth drop with the jaw and the dark opens between them. The parting grows in over
    `split_over` (in the same ratio) from one move to two, so a mouth opened as wide as the
    reference's or less, the most common case, moves in one piece and shows no seam.
    reference (1 or N, 3, H, W); reference_lips (1 or N, 68, 2) and lips (N, 68, 2), iBUG-68 pixels."""
    import cv2

    height, width = reference.shape[-2:]
    dark = np.broadcast_to(np.asarray(MOUTH_INTERIOR, np.float32) / 255, (height, width, 3))
    own = mouth_mask(reference_lips, height, width, soften=0)[:, 0].numpy()
    sources = reference.permute(0, 2, 3, 1).detach().cpu().numpy().astype(np.float32)
    own_points = reference_lips[:, INNER_LIPS].detach().cpu().numpy().astype(np.float32)
    halves = {}  # each reference's two half-masks, drawn once when a frame first parts its mouth
    out = []
    for i, points in enumerate(lips[:, INNER_LIPS].detach().cpu().numpy().astype(np.float32)):
        r = min(i, len(own) - 1)
        source = sources[min(i, len(sources) - 1)]
        colours = dark
        opening = _opening(own_points[r])
        if opening >= open_ratio and np.isfinite(points).all():
            whole = _similarity_matrix(own_points[r], points)
            parting = float(np.clip((_opening(points) / opening - split_from) / split_over, 0, 1))
            pieces = [(own[r], whole)]
            if parting > 0:
                if r not in halves:
                    halves[r] = _mouth_halves(own_points[r], height, width)
                pieces = [(half, (1 - parting) * whole + parting * _similarity_matrix(own_points[r][lip], points[lip]))
                          for half, lip in zip(halves[r], (UPPER_INNER_LIP, LOWER_INNER_LIP))]
            colours = dark.copy()
            for mask, move in pieces:
                moved = cv2.warpAffine(source, move, (width, height), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE)
                alpha = cv2.warpAffine(mask, move, (width, height), flags=cv2.INTER_LINEAR)[..., None]
                colours = moved * alpha + colours * (1 - alpha)
        out.append(np.ascontiguousarray(colours))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()


UPPER_INNER_LIP = [0, 1, 2, 3, 4]  # of the inner-lip contour (iBUG 60-64): the corners and the upper lip
LOWER_INNER_LIP = [4, 5, 6, 7, 0]  # iBUG 64-67 and 60: the corners and the lower lip


def _similarity_matrix(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(2, 3) float32: the similarity that maps points (K, 2) `source` onto `target`."""
    scale, rotation, shift = similarity_transform(source, target)
    return np.concatenate([scale * rotation, shift[:, None]], 1).astype(np.float32)


def _mouth_halves(inner_lips: np.ndarray, height: int, width: int,
                  overlap: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The inside of an inner-lip contour (8, 2) split at the line halfway between the upper and
    the lower lip: (upper, lower) float masks (H, W), each reaching `overlap` of the mouth's height
    past that line, so the two meet without a gap."""
    import cv2

    top, bottom = inner_lips[[1, 2, 3]], inner_lips[[7, 6, 5]]  # 61-63 and the lower points below them
    upper = np.concatenate([inner_lips[:5], (top + (0.5 + overlap / 2) * (bottom - top))[::-1]])
    lower = np.concatenate([inner_lips[[0]], top + (0.5 - overlap / 2) * (bottom - top), inner_lips[4:]])
    masks = []
    for polygon in (upper, lower):
        mask = np.zeros((height, width), np.float32)
        cv2.fillPoly(mask, [np.round(polygon * 4).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=2)
        masks.append(mask)
    return masks[0], masks[1]


def _opening(inner_lips: np.ndarray) -> float:
    """The area inside an inner-lip contour (8, 2) over the squared mouth width (corners 0 and 4)."""
    x, y = inner_lips[:, 0], inner_lips[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    width = float(np.linalg.norm(inner_lips[4] - inner_lips[0]))
    return area / max(width, 1e-6) ** 2 if np.isfinite(area) else 0.0


def _inpaint(image: np.ndarray, hole: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    if not hole.any():
        return image.copy()
    grown = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8))
    return cv2.inpaint(np.ascontiguousarray(image), grown, radius, cv2.INPAINT_TELEA)


def carry_foreground(reference: torch.Tensor, warp: Warp, foreground: torch.Tensor, reach: float = 0.08,
                     threshold: float = 0.02, rim: int = 4, fringe: float = 0.025,
                     iterations: int = 6) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The reference's foreground beside the head, moved by the head's motion extended outward.

    The head's forward motion (warp.forward: where each reference head pixel lands) is spread
    beyond the head in the reference by normalised Gaussian blurring (sigma `reach` of the image
    size). The foreground (in [0, 1]) moves with it as far as it reaches, so hair keeps its shape;
    elsewhere the motion fades with distance from the head, so the far background stays. That
    motion is inverted by fixed-point iteration into the lookup each output pixel makes, so what
    moved is never also left behind. Returns ((colours (N, 3, H, W),
    alpha (N, 1, H, W)) of the carried foreground outside the head mesh, and the reference-side
    mask (1 or N, 1, H, W) of what moved: the head and the foreground where the motion reaches).
    Where the moved foreground leaves a gap, the inpainted background shows. Within `fringe` of the
    image size of the head mesh, a faded foreground (the neck's strip beside the jaw, just outside
    the mesh) moves whole too: left behind, it would stay as a speck of skin beside the moved head."""
    if warp.forward is None:
        raise ConfigError("carry_foreground needs the warp's forward motion: warp_reference(..., forward=True)")
    count, _, height, width = warp.covered.shape
    identity = _identity_grid(height, width, warp.grid.device, warp.grid.dtype)
    reference_covered = warp.reference_covered
    flow = (warp.forward - identity).permute(0, 3, 1, 2)  # zero off the reference's head
    weight, spread = _spread(reference_covered, flow, reach)
    # the foreground moves fully with the head beside it, however far it reaches (hair keeps its shape)
    weight = torch.maximum(weight, F.max_pool2d(foreground.to(weight.dtype), 2 * rim + 1, stride=1, padding=rim))
    motion = weight * spread  # (N, 2, H, W) where each reference pixel goes, minus where it is
    # output pixel x looks up the y with y + motion(y) = x. Where the fading motion folds, two y
    # land on x: the one nearer the head is in front. Solve from two starts: no motion, and the
    # head's own motion spread over the output (near the head, where the fold is).
    _, head_motion = _spread(warp.covered, (warp.grid - identity).permute(0, 3, 1, 2), reach)
    candidates = [_invert(motion, start, identity, iterations) for start in (-motion, head_motion)]
    (far, far_error), (near, near_error) = candidates
    near_weight = _sample(weight, identity, near)
    far_weight = _sample(weight, identity, far)
    pixel = 2 / max(height, width)  # one pixel in grid units
    take_near = (near_error < pixel) & ((near_weight >= far_weight) | (far_error >= pixel))
    take_near = take_near | ((far_error >= pixel) & (near_error < far_error))
    back = torch.where(take_near, near, far)
    grid = identity + back.permute(0, 2, 3, 1)
    source = reference.expand(count, -1, -1, -1) if reference.shape[0] == 1 else reference
    k = foreground.shape[0]  # 1 or N references
    fringe_px = max(1, round(fringe * max(height, width)))
    near_head = F.max_pool2d(reference_covered[:k].to(source.dtype), 2 * fringe_px + 1, stride=1, padding=fringe_px)
    beside_head = near_head * (foreground > threshold).to(source.dtype)
    person = torch.maximum(foreground.to(source.dtype), beside_head)
    person = person.expand(count, -1, -1, -1) if person.shape[0] == 1 else person
    colours = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # the person outside the head mesh (far from the head the motion is zero, so it stays); the
    # head's own pixels come from the mesh warp, except a thin rim (the two silhouettes differ)
    inner = -F.max_pool2d(-reference_covered.float(), 2 * rim + 1, stride=1, padding=rim)
    person = person * (1 - inner)
    alpha = F.grid_sample(person, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    alpha = alpha * (1 - warp.covered)
    # what leaves its place: the solid foreground and a 2-pixel margin (its soft edge), so no rim of it
    # stays behind, and the fringe beside the head; not the rest of a faded part (a neck fading out
    # towards the chin), which is not carried either
    edge = F.max_pool2d((foreground > 0.5).to(source.dtype), 5, stride=1, padding=2)
    moving = torch.maximum(reference_covered[:k], torch.maximum(edge * (weight[:k] > threshold), beside_head))
    return (colours, alpha), moving


def _sample(values: torch.Tensor, identity: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """values (N, C, H, W) looked up at each pixel plus offset (N, 2, H, W), grid units."""
    return F.grid_sample(values, identity + offset.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                         align_corners=False)


def _invert(motion: torch.Tensor, start: torch.Tensor, identity: torch.Tensor, iterations: int):
    """Fixed-point solve of back = -motion(x + back) from `start` (N, 2, H, W); (back, |residual|
    (N, 1, H, W)), grid units."""
    back = start
    for _ in range(iterations):
        back = -_sample(motion, identity, back)
    error = (back + _sample(motion, identity, back)).norm(dim=1, keepdim=True)
    return back, error


def _spread(mask: torch.Tensor, values: torch.Tensor | None, reach: float, low: int = 64):
    """(how near the mask each pixel is, in [0, 1]; the values averaged over the nearby mask),
    computed at low resolution and brought back to the mask's size."""
    size = mask.shape[-2:]
    small = F.interpolate(mask.float(), size=(low, low), mode="area")
    sigma = max(reach * low, 0.5)
    kernel = _gaussian(sigma, mask.device)
    near = _blur(small, kernel)
    weight = F.interpolate((near * 4).clamp(0, 1), size=size, mode="bilinear", align_corners=False)
    if values is None:
        return weight, None
    spread = _blur(F.interpolate(values.float() * mask, size=(low, low), mode="area"), kernel)
    spread = spread / near.clamp(min=1e-4)
    return weight, F.interpolate(spread, size=size, mode="bilinear", align_corners=False)


def fill_mirrored(image: np.ndarray, hole: np.ndarray, soften: float = 1.5,
                  avoid: np.ndarray | None = None) -> np.ndarray:
    """Fill a hole of a uint8 (H, W, 3) image with what lies around it mirrored in, so a backdrop's
    texture (curtain folds, a window frame) goes on behind where a head was, where a smooth fill
    leaves a pale blob. Each hole pixel takes, in this order of preference:

    1. the pixel as far beyond its nearest edge point as it lies inside, where that edge point is
       not below it (the backdrop above and beside a head);
    2. the pixel as far beyond the nearer end of its run of hole pixels in its own row (what lies
       beside it at the same height: the backdrop beside the lower head, the collar beside a
       neck), so nothing below the hole (a collar, a shoulder) is reflected up into a head's place;
    3. the reflection about its nearest edge point below it, where its row has nothing to mirror;
    4. the smooth push-pull fill (`_fill_smooth`), where every reflection leaves the image or lands
       in the hole.

    The fill is softened by a Gaussian of `soften` pixels (the seams where the source jumps).
    `avoid` (H, W, bool): what is never mirrored in (another person beside the head): the fill
    treats it as part of the hole and writes only the hole."""
    import cv2
    from scipy.ndimage import distance_transform_edt

    if not hole.any():
        return image.copy()
    if avoid is not None and (avoid & ~hole).any():
        out = image.copy()
        out[hole] = fill_mirrored(image, hole | avoid, soften)[hole]
        return out
    height, width = hole.shape
    rows, columns = np.mgrid[:height, :width]

    def known(source_rows, source_columns):
        inside = (source_rows >= 0) & (source_rows < height) & (source_columns >= 0) & (source_columns < width)
        source_rows, source_columns = np.clip(source_rows, 0, height - 1), np.clip(source_columns, 0, width - 1)
        return inside & ~hole[source_rows, source_columns], image[source_rows, source_columns]

    _, (edge_rows, edge_columns) = distance_transform_edt(hole, return_indices=True)
    nearest_ok, nearest = known(2 * edge_rows - rows, 2 * edge_columns - columns)
    # the nearest known column at or left of each pixel (-1: none), and at or right of it (width: none)
    left = np.maximum.accumulate(np.where(hole, -1, columns), axis=1)
    right = np.minimum.accumulate(np.where(hole, width, columns)[:, ::-1], axis=1)[:, ::-1]
    left_ok, from_left = known(rows, 2 * left + 1 - columns)
    right_ok, from_right = known(rows, 2 * right - 1 - columns)
    left_ok &= left >= 0
    right_ok &= right < width
    take_left = left_ok & (~right_ok | (columns - left <= right - columns))
    row_ok, row = take_left | right_ok, np.where(take_left[..., None], from_left, from_right)
    from_above = nearest_ok & (edge_rows <= rows)
    unreflected = hole & ~row_ok & ~nearest_ok  # the only pixels that take the smooth fill
    smooth = _fill_smooth(image, hole) if unreflected.any() else image
    mirrored = np.select([from_above[..., None], row_ok[..., None], nearest_ok[..., None]],  # the order above
                         [nearest, row, nearest], smooth).astype(np.float32)
    if soften > 0:
        mirrored = cv2.GaussianBlur(mirrored, (0, 0), soften)
    out = image.copy()
    out[hole] = np.clip(mirrored[hole] + 0.5, 0, 255).astype(np.uint8)
    return out


def _fill_smooth(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Fill a large hole of a uint8 (H, W, 3) image smoothly from its surroundings (push-pull:
    mask-weighted averages over an image pyramid, coarse levels filling what fine ones lack)."""
    import cv2

    known = (~hole).astype(np.float32)[..., None]
    levels = [(image.astype(np.float32) * known, known)]
    while min(levels[-1][1].shape[:2]) > 4:
        colours, weights = levels[-1]
        levels.append((cv2.pyrDown(colours).reshape(-1, (colours.shape[1] + 1) // 2, 3),
                       cv2.pyrDown(weights).reshape(-1, (weights.shape[1] + 1) // 2, 1)))
    colours, weights = levels[-1]
    # the coarsest level: its empty pixels (a hole as wide as the image's side) take the known mean
    mean = image[~hole].reshape(-1, 3).astype(np.float32).mean(0) if (~hole).any() else np.zeros(3, np.float32)
    filled = np.where(weights > 1e-3, colours / np.maximum(weights, 1e-6), mean)
    for colours, weights in reversed(levels[:-1]):
        up = cv2.resize(filled, (colours.shape[1], colours.shape[0]), interpolation=cv2.INTER_LINEAR)
        trust = np.clip(weights, 0, 1)
        filled = np.where(weights > 1e-6, colours / np.maximum(weights, 1e-6), 0) * trust + up * (1 - trust)
    out = image.copy()
    out[hole] = np.clip(filled[hole] + 0.5, 0, 255).astype(np.uint8)
    return out


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Images (N, C, H, W) blurred by a Gaussian of `sigma` pixels (separable, zero padding)."""
    return _blur(images, _gaussian(sigma, images.device))


def _gaussian(sigma: float, device) -> torch.Tensor:
    radius = int(3 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _blur(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with zero padding, per channel."""
    channels, radius = images.shape[1], len(kernel) // 2
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    images = F.conv2d(images, horizontal, padding=(0, radius), groups=channels)
    return F.conv2d(images, vertical, padding=(radius, 0), groups=channels)


def _identity_grid(height: int, width: int, device, dtype) -> torch.Tensor:
    """(H, W, 2) grid_sample coordinates of the pixel centres (align_corners=False)."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width * 2 - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)
