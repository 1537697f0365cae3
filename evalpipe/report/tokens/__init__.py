"""A token comparison rendered: terminal text (``text``), the dashboard pair page's figures
(``page``) and the dashboard cache's exact JSON form (``cache``)."""
