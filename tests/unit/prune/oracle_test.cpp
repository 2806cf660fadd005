// Oracle tests: each pruner on scripted features and attention, against hand-worked answers.
#include <gtest/gtest.h>
