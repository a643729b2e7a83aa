"""The shop's own helpers. A package named `tools`, like pipewarden's folder: installed pipewarden lives under
`pipewarden.` only, so neither shadows the other."""
