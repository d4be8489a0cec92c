// The portability layer: include this one header.
#pragma once

#include "dependent_launch.h"
#include "numerics.h"
#include "platform.h"
#include "sync.h"
#include "vec.h"
#include "wave.h"
