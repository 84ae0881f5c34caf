"""The image file types every command reads (distill, cache-latents, eval), so one folder means the same everywhere."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm")
