"""Experiments: plate maps (`platemap`), the tidy table of a plate's recordings (`table`),
comparisons of conditions (`stats`), dose-response fits (`fits`), the analysis that joins them
(`analysis`) and its report (`report`). Pure functions of summaries and a plate map."""
