"""Importers: other harnesses' output folders → evalpipe runs."""
