"""FairSteer: the estimator that fits BAD, the DSV and DAS, and saves/loads them as artifacts."""
