-- Which ModelRelease actions apply in the current phase (the others are shown disabled).
local actions = {}
local phase = ""
local canary = false
local analysisPause = false
if obj.status ~= nil then
  phase = obj.status.phase or ""
  canary = obj.status.canary ~= nil
  analysisPause = obj.status.pauseReason ~= nil
end
local held = obj.metadata.annotations ~= nil and obj.metadata.annotations["modelrelease.io/paused"] == "true"
local inFlight = phase == "Pending" or phase == "Training" or phase == "Progressing" or phase == "Paused"
  or phase == "Promoting"
actions["promote"] = {["disabled"] = not (canary and (phase == "Progressing" or phase == "Paused"))}
actions["promote-full"] = {["disabled"] = not (canary and inFlight and phase ~= "Promoting")}
actions["abort"] = {["disabled"] = not inFlight}
actions["retry"] = {["disabled"] = not (phase == "RolledBack" or phase == "Failed" or analysisPause)}
actions["pause"] = {["disabled"] = held or not inFlight}
actions["resume"] = {["disabled"] = not (held or analysisPause)}
return actions
