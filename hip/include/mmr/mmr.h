// The portability layer: include this one header.
#pragma once

#include "cluster.h"
#include "dependent_launch.h"
#include "mma.h"
#include "numerics.h"
#include "platform.h"
#include "sync.h"
#include "vec.h"
#include "wave.h"
