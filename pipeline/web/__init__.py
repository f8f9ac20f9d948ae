"""``mcdrop export-web``: a static page that runs a model's uncertainty graphs in the browser (LiteRT.js)."""
