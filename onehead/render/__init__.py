from onehead.render.rasterize import Fragments, interpolate, rasterize_mesh, rasterize_uv
