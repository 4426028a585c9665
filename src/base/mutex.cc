#include "base/mutex.h"

#include "base/log.h"

namespace pororoca {

void Mutex::AssertHeld() const {
  PORO_CHECK(owner_.load(std::memory_order_relaxed) == std::this_thread::get_id());
}

}  // namespace pororoca
