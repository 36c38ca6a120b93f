# The scoring workload of docs/peers.md: 5,000 training rows, ten normal features,
# a nonlinear binary target, a binomial glm and a 50-tree random forest, fixed seed.
# Sourced in the zygote, so every worker starts with both models loaded.
make_features <- function(n) {
  d <- lapply(seq_len(10), function(i) rnorm(n))
  names(d) <- paste0("x", seq_len(10))
  as.data.frame(d)
}
local({
  set.seed(42)
  train <- make_features(5000)
  train$y <- factor(as.integer(
    sin(train$x1) + train$x2^2 - train$x3 * train$x4 + rnorm(5000, sd = 0.5) > 1
  ))
  glm_model <<- glm(y ~ ., data = train, family = binomial)
  if (requireNamespace("randomForest", quietly = TRUE)) {
    rf_model <<- randomForest::randomForest(y ~ ., data = train, ntree = 50)
  }
})
score_glm <- function(d) unname(predict(glm_model, newdata = d, type = "response"))
score_rf <- function(d) unname(predict(rf_model, newdata = d, type = "prob")[, 2])
