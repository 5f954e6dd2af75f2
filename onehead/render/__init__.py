from onehead.render.rasterize import Fragments, interpolate, rasterize_mesh, rasterize_uv, visible_faces
from onehead.render.splat import (ProjectedGaussians, SplatResult, TileIntersections, gaussian_covariances,
                                  intersect_tiles, project_gaussians, splat_features)
from onehead.render.volume import (VolumeOutput, camera_rays, composite, importance_samples, render_volume,
                                   stratified_samples, triplane_features)

__all__ = ["VolumeOutput", "camera_rays", "composite", "importance_samples", "render_volume", "stratified_samples",
           "triplane_features", "Fragments", "ProjectedGaussians", "SplatResult", "TileIntersections", "gaussian_covariances",
           "interpolate", "intersect_tiles", "project_gaussians", "rasterize_mesh", "rasterize_uv",
           "splat_features", "visible_faces"]
