from onehead.render.rasterize import Fragments, interpolate, rasterize_mesh, rasterize_uv
from onehead.render.splat import SplatResult, splat_features
