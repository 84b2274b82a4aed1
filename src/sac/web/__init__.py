"""`sac serve`: a local browser app to segment, correct and export nuclei.

Layer above :mod:`sac.inference` (it imports the inference package, never the reverse). Every edit a user makes
in the page is one call of :class:`sac.inference.editor.Editor`, the same object the Python API uses, so what a click
does in the browser is what the library does.

* :mod:`sac.web.settings` -- :class:`ServeSettings` (stdlib only: the CLI builds it before importing FastAPI);
* :mod:`sac.web.images` -- uploads and ``--data-dir`` items -> ``uint8 [H, W, 3]`` (decoded as `sac segment` does);
* :mod:`sac.web.sessions` -- per-browser state, background segmentation, LRU eviction under a memory budget;
* :mod:`sac.web.contours` -- nucleus polygons for the page (the GeoJSON writer's geometry) and per-edit deltas;
* :mod:`sac.web.exports` -- downloads (the writers of `sac segment`) and "save as training example";
* :mod:`sac.web.app` -- the FastAPI app: thin routes that parse, call one function, serialise.
"""
