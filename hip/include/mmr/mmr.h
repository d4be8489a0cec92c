// The portability layer: include this one header.
#pragma once

#include "numerics.h"
#include "platform.h"
#include "sync.h"
#include "vec.h"
#include "wave.h"
