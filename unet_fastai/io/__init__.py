"Reading and writing scenes: rasters of any size window by window, masks as classes, vector labels, GeoTIFF/PNG writers and the geometry of tiles."
